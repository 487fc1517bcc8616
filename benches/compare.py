#!/usr/bin/env python3
"""End-to-end comparison: the example image server with the cache, with --no-cache and with
--access-check trust, against nginx serving the same files, on 127.0.0.1.

    python3 benches/compare.py            # ROUNDS=3 WRK_SECS=10 by default, about 8 minutes

Builds the example in release, installs nginx and wrk with apt-get when they are missing (their
rows are skipped, saying so, when that is not possible), runs every workload interleaved
(A B A B ...) and prints the medians, the ratios against the targets, the servers' CPU time
(from /proc) and peak resident memory. Uses about 3 GiB in $TMPDIR, removed at the end.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROUNDS = int(os.environ.get("ROUNDS", "3"))
WRK_SECS = int(os.environ.get("WRK_SECS", "10"))
TOKEN = "bench-admin"
GIB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message):
    print(message, file=sys.stderr, flush=True)


def have(tool):
    return shutil.which(tool) is not None


def ensure_tools():
    missing = [t for t in ("nginx", "wrk") if not have(t)]
    if missing and have("apt-get") and os.geteuid() == 0:
        log(f"installing {' '.join(missing)} with apt-get")
        subprocess.run(["apt-get", "install", "-y", *missing], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    if not have("curl"):
        sys.exit("curl is missing: apt-get install -y curl")
    for tool in ("nginx", "wrk"):
        if not have(tool):
            log(f"SKIPPING the {tool} rows: {tool} is missing and could not be installed")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total / TICK


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


class Server:
    """The example image server, as a child process."""

    def __init__(self, name, data_dir, *flags, env=None):
        self.name = name
        binary = os.path.join(ROOT, "target/release/examples/image_server")
        self.log = open(os.path.join(os.path.dirname(data_dir), f"{name}.log"), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1:0", "--data-dir", data_dir, "--admin-token", TOKEN,
             *flags],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        self.ready_after = time.monotonic() - self.started
        match = re.search(r"http://[0-9.:]+", line)
        if not match:
            raise RuntimeError(f"{name} did not start: {line!r}")
        self.url = match.group(0)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pids(self):
        return [self.proc.pid]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Nginx:
    def __init__(self, workdir, root):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes auto;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location ~ ^/v2/images/([^/]+)/file$ {{
            alias {root}/$1;
            default_type application/octet-stream;
        }}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", self.dir],
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.05)

    @property
    def pids(self):
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        return [self.proc.pid, *map(int, children)]

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"X-Auth-Token": TOKEN})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def upload(server, path):
    _, created = api("POST", server.url + "/v2/images", json.dumps(
        {"name": os.path.basename(path), "disk_format": "raw",
         "container_format": "bare"}).encode())
    image = json.loads(created)["id"]
    subprocess.run(["curl", "-sf", "-H", f"X-Auth-Token: {TOKEN}", "-T", path,
                    f"{server.url}/v2/images/{image}/file"], check=True)
    return image


def download(url, path=None):
    """curl one download; returns (seconds, bytes, x-cache-status)."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {TOKEN}", "-w",
         "%{http_code} %{size_download} %{time_total} %header{x-cache-status}", url],
        capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "200":
        raise RuntimeError(f"GET {url}: {out[0]}")
    return float(out[2]), int(out[1]), (out[3] if len(out) > 3 else "")


def measured(servers, work):
    """Runs `work()`; returns its result and the CPU seconds `servers` spent meanwhile."""
    before = cpu_seconds([p for s in servers for p in s.pids])
    result = work()
    return result, cpu_seconds([p for s in servers for p in s.pids]) - before


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(0.05)


def wrk(url, connections):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{WRK_SECS}s", "-H", f"X-Auth-Token: {TOKEN}",
         url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk {url}: {errors.group(1)} non-2xx answers")
    return rate


def peak_rss_during(server, work):
    peak = [rss_bytes(server.pids)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(server.pids))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peak[0]


def main():
    ensure_tools()
    log("building the example server (release)")
    subprocess.run(["cargo", "build", "--release", "--example", "image_server"], cwd=ROOT,
                   check=True)
    work = tempfile.mkdtemp(prefix="tic-compare-")
    os.chmod(work, 0o755)  # nginx workers run as another user
    servers = []
    rows = []
    try:
        run(work, servers, rows)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n


def run(work, servers, rows):
    data = os.path.join(work, "data")
    files = {}
    for name, size in (("big", GIB), ("big2", GIB), ("mid", 256 << 20), ("small", 4096)):
        files[name] = os.path.join(work, f"{name}.raw")
        make_file(files[name], size)

    cache = Server("cache", data, env={"RUST_LOG": "info"})
    servers.append(cache)
    ids = {name: upload(cache, path) for name, path in files.items()}
    for path in files.values():
        os.remove(path)
    trust_conf = os.path.join(work, "trust.conf")
    with open(trust_conf, "w") as f:
        f.write(f"[DEFAULT]\nimage_cache_dir = {work}/trust-cache\n")
    trust = Server("trust", data, "--access-check", "trust", "--config-file", trust_conf)
    plain = Server("no-cache", data, "--no-cache")
    servers += [trust, plain]
    nginx = Nginx(work, os.path.join(data, "images")) if have("nginx") else None
    if nginx:
        servers.append(nginx)

    def file_url(server, name):
        return f"{server.url}/v2/images/{ids[name]}/file"

    def cached(server_dir, name):
        return os.path.exists(os.path.join(server_dir, ids[name]))

    # Warm the hits.
    for server, cache_dir in ((cache, f"{data}/cache"), (trust, f"{work}/trust-cache")):
        for name in ("big", "small"):
            download(file_url(server, name))
            wait_for(lambda: cached(cache_dir, name), f"{server.name} caches {name}")

    # 1 GiB hit, one client, against nginx: throughput and server CPU per GiB.
    log("1 GiB hits")
    hit_rate, hit_cpu, ngx_rate, ngx_cpu = [], [], [], []
    for _ in range(ROUNDS):
        (secs, size, status), cpu = measured([cache], lambda: download(file_url(cache, "big")))
        assert status == "HIT", status
        hit_rate.append(size / secs)
        hit_cpu.append(cpu / (size / GIB))
        if nginx:
            (secs, size, _), cpu = measured([nginx], lambda: download(file_url(nginx, "big")))
            ngx_rate.append(size / secs)
            ngx_cpu.append(cpu / (size / GIB))
    rows.append(("1 GiB hit, one client", "cache", f"{mb(hit_rate)} MB/s",
                 ratio(hit_rate, ngx_rate), ">= 1.0x nginx"))
    rows.append(("", "nginx (sendfile)", f"{mb(ngx_rate)} MB/s", "", ""))
    rows.append(("  server CPU per GiB", "cache", f"{med(hit_cpu):.2f} s",
                 ratio(hit_cpu, ngx_cpu), "<= 1.2x nginx"))
    rows.append(("", "nginx", f"{med(ngx_cpu):.2f} s", "", ""))

    # 1 GiB miss that fills, against the same server with --no-cache.
    log("1 GiB misses")
    miss_rate, plain_rate = [], []
    for _ in range(ROUNDS):
        api("DELETE", f"{cache.url}/v2/cache/{ids['big']}")
        wait_for(lambda: not cached(f"{data}/cache", "big"), "the delete")
        secs, size, status = download(file_url(cache, "big"))
        assert status == "MISS", status
        miss_rate.append(size / secs)
        wait_for(lambda: cached(f"{data}/cache", "big"), "the fill commits")
        secs, size, _ = download(file_url(plain, "big"))
        plain_rate.append(size / secs)
    rows.append(("1 GiB miss that fills", "cache", f"{mb(miss_rate)} MB/s",
                 ratio(miss_rate, plain_rate), ">= 0.95x --no-cache"))
    rows.append(("", "--no-cache", f"{mb(plain_rate)} MB/s", "", ""))

    # 4 KiB hits with wrk.
    if have("wrk"):
        for connections in (16, 64):
            log(f"4 KiB hits, wrk -c{connections}, {WRK_SECS} s each")
            rates = {"metadata": [], "trust": [], "nginx": []}
            for _ in range(ROUNDS):
                rates["metadata"].append(wrk(file_url(cache, "small"), connections))
                rates["trust"].append(wrk(file_url(trust, "small"), connections))
                if nginx:
                    rates["nginx"].append(wrk(file_url(nginx, "small"), connections))
            label = f"4 KiB hits, wrk -c{connections}"
            rows.append((label, "cache, metadata check", f"{med(rates['metadata']):.0f} req/s",
                         ratio(rates["metadata"], rates["nginx"]), ">= 0.5x nginx"))
            rows.append(("", "cache, trust", f"{med(rates['trust']):.0f} req/s",
                         ratio(rates["trust"], rates["nginx"]), ">= 0.8x nginx"))
            rows.append(("", "nginx", f"{med(rates['nginx']):.0f} req/s" if nginx else "-",
                         "", ""))

    # 32 concurrent cold GETs of one 256 MiB image against one cold GET.
    log("32 concurrent cold GETs of 256 MiB")
    single, many, reads = [], [], []

    def cold():
        api("DELETE", f"{cache.url}/v2/cache/{ids['mid']}")
        wait_for(lambda: not cached(f"{data}/cache", "mid"), "the delete")
        wait_for(lambda: not os.listdir(f"{data}/cache/incomplete"), "no fill running")

    def store_reads():
        with open(os.path.join(work, "cache.log")) as f:
            return f.read().count("reading image data")

    for _ in range(ROUNDS):
        cold()
        started = time.monotonic()
        download(file_url(cache, "mid"))
        single.append(time.monotonic() - started)
        wait_for(lambda: cached(f"{data}/cache", "mid"), "the fill commits")
        cold()
        before = store_reads()
        started = time.monotonic()
        clients = [subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {TOKEN}", "-w",
             "%{http_code} %{size_download}", file_url(cache, "mid")],
            stdout=subprocess.PIPE, text=True) for _ in range(32)]
        answers = [c.communicate()[0] for c in clients]
        many.append(time.monotonic() - started)
        assert all(a == f"200 {256 << 20}" for a in answers), answers
        time.sleep(0.5)
        reads.append(store_reads() - before)
    rows.append(("32 cold GETs of 256 MiB", "cache, wall", f"{med(many):.2f} s",
                 f"{med(many) / med(single):.2f}x", "<= 1.2x one GET"))
    rows.append(("", "one cold GET", f"{med(single):.2f} s", "", ""))
    rows.append(("", "image store reads", f"{max(reads)} (per round: {reads})", "",
                 "1"))

    # Peak RSS while serving 8 x 1 GiB hits and 1 fill, on a fresh server.
    log("peak RSS: 8 x 1 GiB hits and 1 fill")
    cache.stop()
    servers.remove(cache)
    fresh = Server("rss", data)
    servers.append(fresh)
    baseline = rss_bytes(fresh.pids)

    def eight_and_one():
        urls = [file_url(fresh, "big")] * 8 + [file_url(fresh, "big2")]
        clients = [subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {TOKEN}", url])
            for url in urls]
        for client in clients:
            client.wait()

    peak = peak_rss_during(fresh, eight_and_one)
    rows.append(("peak RSS, 8 x 1 GiB hits + 1 fill", "cache", f"{peak >> 20} MiB",
                 f"(idle {baseline >> 20} MiB)", "<= 64 MiB"))
    fresh.stop()
    servers.remove(fresh)

    # 100,000 cached entries: open (adopting them), reopen, list, prune half.
    log("100,000 entries")
    big_dir = os.path.join(work, "many")
    cache_dir = os.path.join(big_dir, "cache")
    os.makedirs(cache_dir)
    for i in range(100_000):
        with open(os.path.join(cache_dir, f"image-{i:06d}"), "wb") as f:
            f.write(b"x")
    os.sync()  # a cache's files were not all written a moment ago: no writeback in the way
    conf = os.path.join(work, "many.conf")
    with open(conf, "w") as f:
        f.write(f"[DEFAULT]\nimage_cache_dir = {cache_dir}\nimage_cache_max_size = 50000\n")
    first = Server("many", big_dir, "--config-file", conf)
    first.stop()
    again = Server("many", big_dir, "--config-file", conf)
    servers.append(again)
    started = time.monotonic()
    _, listing = api("GET", f"{again.url}/v2/cache")
    listed = time.monotonic() - started
    assert len(json.loads(listing)["cached_images"]) == 100_000
    started = time.monotonic()
    _, pruned = api("POST", f"{again.url}/v2/cache/prune")
    prune_secs = time.monotonic() - started
    assert json.loads(pruned)["total_files_pruned"] == 50_000, pruned
    rows.append(("100,000 entries", "GET /v2/cache", f"{listed:.2f} s", "", "<= 1 s"))
    rows.append(("", "prune half", f"{prune_secs:.2f} s", "", "<= 2 s"))
    rows.append(("", "first open (adopts all)", f"{first.ready_after:.2f} s", "", ""))
    rows.append(("", "reopen + reconcile", f"{again.ready_after:.2f} s", "",
                 "<= 3 s (to listening)"))


def med(values):
    return statistics.median(values) if values else float("nan")


def mb(values):
    return f"{med(values) / 1e6:.0f}"


def ratio(ours, theirs):
    if not ours or not theirs:
        return "-"
    return f"{med(ours) / med(theirs):.2f}x"


def print_table(rows):
    uname = os.uname()
    cores = os.cpu_count()
    print(f"\n{time.strftime('%Y-%m-%d')}, {uname.sysname} {uname.release}, {cores} cores, "
          f"{ROUNDS} rounds interleaved, medians\n")
    print("| workload | server | result | ratio | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
