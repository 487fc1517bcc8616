#!/usr/bin/env python3
"""End-to-end comparison: the example image server with the cache, with --no-cache and with
--access-check trust, against nginx serving the same files and real Glance 33 with its own
image cache, on 127.0.0.1; and the digest limit, `openssl speed -evp`, on this machine.

    python3 benches/compare.py            # ROUNDS=3 WRK_SECS=6 by default, about 10 minutes
    python3 benches/compare.py table      # the one method (below), about 5 minutes
    python3 benches/compare.py resilience # only the rows of the node's limits (about 3 minutes):
                                          # 4 KiB hits with remembered decisions, a cut fill

`table` is the simplest comparison a user would make on their own machine, and the one the
README quotes: a 512 MiB image freshly uploaded to each side (the same bytes), Glance 33 with
no Keystone (noauth: the flavor cachemanagement) under uWSGI with one process and the
filesystem store, against the example server built with `--features openssl`; three rounds,
each round every workload once in turn (interleaved), medians, `curl -o /dev/null` as the
client. Its rows: the miss that fills (SHA-512, and MD5 only) against Glance's own cache fill
and against `openssl speed -evp` (one core, the other idle; and `-multi 2`, the rate each core
gets while the other works too, which the client and the relay make it do); a 1 GiB hit
against nginx's sendfile, with the servers' CPU per GiB; 4 KiB hits with `wrk -c16`, against
nginx and against examples/floor_server.rs (an axum server answering 4 KiB from memory and
nothing else: what any hyper server pays per request on the machine), with each server's CPU
per request.

Why an earlier method (the default run's rows, a 1 GiB image, Glance behind Keystone, the
image uploaded before 16 GiB of other files) gave the opposite fill ratio (1.63x against
0.70x): on these machines a write into page-cache pages the kernel has not used lately costs
several times a write into warm ones (`dd` of 1 GiB into a new file: 221 MB/s, then 698 MB/s,
then 3.2 GB/s, with 1.5-4.7 s of system CPU buffered, 0.2-0.3 s with O_DIRECT), and both
fills wrote their cache file through the page cache. Which side paid was decided by what the
machine had written just before, not by either program. The fill now writes its file with
direct I/O (src/store/direct.rs) and pays the same whatever ran before; Glance still writes
buffered, so its rows swing most between runs. Glance also verifies only the MD5 `checksum`
while it fills, where the cache verifies the SHA-512 multihash.

Builds the example in release, installs nginx and wrk with apt-get when they are missing (their
rows are skipped, saying so, when that is not possible), runs Keystone and Glance from the
project's test scripts (tests/openstack; their rows are skipped, saying so, where Python 3.11
or the venv cannot be had), runs every workload interleaved (A B A B ...) and prints the
medians, the ratios against the targets, the servers' CPU time (from /proc) and peak resident
memory. Uses about 16 GiB in $TMPDIR, removed at the end.
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
WRK_SECS = int(os.environ.get("WRK_SECS", "6"))
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


def stop_process(proc, log):
    """SIGTERM, then SIGKILL after 10 s; closes its log."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Listening:
    """A server of this repository as a child process: started with `argv`, its stderr in
    `log_path`, ready once it prints `listening on http://ADDR` (which sets `url`)."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log = open(log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
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
        stop_process(self.proc, self.log)


class Server(Listening):
    """The example image server, as a child process."""

    def __init__(self, name, data_dir, *flags, env=None, bind="127.0.0.1:0"):
        binary = os.path.join(ROOT, "target/release/examples/image_server")
        super().__init__(
            name,
            [binary, "--bind", bind, "--data-dir", data_dir, "--admin-token", TOKEN, *flags],
            os.path.join(os.path.dirname(data_dir), f"{name}.log"), env=env)

    def last_fill_digest_seconds(self, image):
        """The CPU time the digest of the last committed fill of `image` took, from its log
        line (`fill committed ... digest_seconds=`); None when not logged."""
        with open(self.log.name, errors="replace") as f:
            lines = [line for line in f if "fill committed" in line and image in line]
        found = re.search(r"digest_seconds=([0-9.]+)", lines[-1]) if lines else None
        return float(found.group(1)) if found else None


class Floor(Listening):
    """examples/floor_server.rs: an axum server answering every request with 4 KiB from
    memory and nothing else, the floor under the cache's small hits on this machine."""

    def __init__(self, workdir):
        binary = os.path.join(ROOT, "target/release/examples/floor_server")
        super().__init__("floor", [binary, "--bind", "127.0.0.1:0"],
                         os.path.join(workdir, "floor.log"))


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


class Glance:
    """Real Glance 33 with its own image cache, behind a real Keystone, from the project's test
    scripts (tests/openstack): uWSGI, one process, SQLite, the filesystem store."""

    SCRIPTS = os.path.join(ROOT, "tests", "openstack")
    STARTING = "starting Keystone and Glance 33 (tests/openstack)"

    @classmethod
    def start(cls, work, image_file):
        """Glance with `image_file` uploaded; None, saying why, where it cannot run."""
        install = subprocess.run(["bash", os.path.join(cls.SCRIPTS, "install.sh")],
                                 capture_output=True, text=True)
        if install.returncode != 0:
            reason = (install.stderr.strip().splitlines() or ["install.sh failed"])[-1]
            log(f"SKIPPING the Glance rows: {reason}")
            return None
        log(cls.STARTING)
        return cls(work, install.stdout.strip().splitlines()[-1], image_file)

    def __init__(self, work, venv, image_file):
        self.name = "glance"
        self.procs = []
        keystone_port = free_port()
        self._run("keystone.sh", venv, os.path.join(work, "keystone"), str(keystone_port))
        keystone = f"http://127.0.0.1:{keystone_port}/v3"
        self.token = keystone_token(keystone, "admin", "admin-secret", "admin")
        add_glance_user(keystone, self.token)
        self.port = free_port()
        self.dir = os.path.join(work, "glance")
        self._run("glance.sh", venv, self.dir, str(self.port), keystone)
        self.url = f"http://127.0.0.1:{self.port}"
        _, created = keystone_call(self.token, "POST", self.url + "/v2/images", {
            "name": "bench", "disk_format": "raw", "container_format": "bare",
            "visibility": "public"})
        self.image = created["id"]
        subprocess.run(["curl", "-sf", "-H", f"X-Auth-Token: {self.token}", "-H",
                        "Content-Type: application/octet-stream", "-T", image_file,
                        f"{self.url}/v2/images/{self.image}/file"], check=True)

    def _run(self, script, *args):
        proc = subprocess.Popen(["bash", os.path.join(self.SCRIPTS, script), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{script} did not start")

    @property
    def pids(self):
        found = []
        for proc in self.procs:
            found += subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True,
                                    text=True).stdout.split()
        return [int(pid) for pid in found]

    def cached(self):
        return os.path.exists(os.path.join(self.dir, "image-cache", self.image))

    def fill_once(self):
        """One download while Glance's cache fills (MB/s); waits for the commit."""
        keystone_call(self.token, "DELETE", f"{self.url}/v2/cache/{self.image}")
        wait_for(lambda: not self.cached(), "Glance's cache delete")
        secs, size, _ = download(f"{self.url}/v2/images/{self.image}/file", token=self.token)
        wait_for(self.cached, "Glance caches the image")
        return size / secs

    def miss_and_hit(self, rounds):
        """The image's download while Glance's cache fills, then from its cache (MB/s each)."""
        misses, hits = [], []
        url = f"{self.url}/v2/images/{self.image}/file"
        for _ in range(rounds):
            keystone_call(self.token, "DELETE", f"{self.url}/v2/cache/{self.image}")
            wait_for(lambda: not self.cached(), "Glance's cache delete")
            secs, size, _ = download(url, token=self.token)
            misses.append(size / secs)
            wait_for(self.cached, "Glance caches the image")
            secs, size, _ = download(url, token=self.token)
            hits.append(size / secs)
        return misses, hits

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


class NoauthGlance(Glance):
    """Real Glance 33 without Keystone (tests/openstack/glance.sh noauth): every caller is an
    admin; uWSGI, one process, SQLite, the filesystem store, its own image cache."""

    STARTING = "starting Glance 33 without Keystone (tests/openstack/glance.sh noauth)"

    def __init__(self, work, venv, image_file):
        self.name = "glance"
        self.procs = []
        self.token = "noauth"
        self.port = free_port()
        self.dir = os.path.join(work, "glance")
        self._run("glance.sh", venv, self.dir, str(self.port), "-", "noauth")
        self.url = f"http://127.0.0.1:{self.port}"
        _, created = keystone_call(self.token, "POST", self.url + "/v2/images", {
            "name": "bench", "disk_format": "raw", "container_format": "bare"})
        self.image = created["id"]
        subprocess.run(["curl", "-sf", "-H", "Content-Type: application/octet-stream", "-T",
                        image_file, f"{self.url}/v2/images/{self.image}/file"], check=True)


def keystone_call(token, method, url, body=None):
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return response, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        if method == "DELETE" and error.code == 404:
            return error, None
        raise


def keystone_token(keystone, user, password, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    request = urllib.request.Request(f"{keystone}/auth/tokens", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.headers["X-Subject-Token"]


def add_glance_user(keystone, token):
    """The user glance.sh expects: glance / glance-secret, admin and service in "service"."""
    def call(method, path, body=None):
        return keystone_call(token, method, keystone + path, body)[1]

    project = call("POST", "/projects", {"project": {"name": "service",
                                                     "domain_id": "default"}})["project"]
    user = call("POST", "/users", {"user": {"name": "glance", "password": "glance-secret",
                                            "domain_id": "default"}})["user"]
    for name in ("admin", "service"):
        roles = call("GET", f"/roles?name={name}")["roles"]
        role = roles[0] if roles else call("POST", "/roles", {"role": {"name": name}})["role"]
        call("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{role['id']}")


def openssl_speed(algorithm):
    """`openssl speed -evp ALGO` on 8 KiB blocks, one core, in MB/s; None without openssl."""
    if not have("openssl"):
        log(f"SKIPPING the openssl {algorithm} row: openssl is missing")
        return None
    out = subprocess.run(["openssl", "speed", "-evp", algorithm, "-bytes", "8192", "-seconds",
                          "2"], capture_output=True, text=True).stdout
    try:
        return float(out.strip().splitlines()[-1].split()[-1].rstrip("k")) / 1000
    except (IndexError, ValueError):
        log(f"SKIPPING the openssl {algorithm} row: cannot read its output")
        return None


def openssl_speed_multi(algorithm):
    """`openssl speed -multi 2 -evp ALGO`: what each of two cores gets while both hash (MB/s
    each); None without openssl."""
    if not have("openssl"):
        return None
    out = subprocess.run(["openssl", "speed", "-multi", "2", "-evp", algorithm, "-bytes",
                          "8192", "-seconds", "2"], capture_output=True, text=True).stdout
    try:
        return float(out.strip().splitlines()[-1].split()[-1].rstrip("k")) / 1000 / 2
    except (IndexError, ValueError):
        return None


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


def download(url, token=TOKEN, netns=None):
    """curl one download (from the network namespace `netns`, if given); returns (seconds,
    bytes, x-cache-status)."""
    inside = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(
        [*inside, "curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {token}", "-w",
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


def wrk(url, connections, servers=()):
    """wrk's requests per second against `url`; with `servers`, also the microseconds of CPU
    they spent per request meanwhile: (rate, us_per_request)."""
    before = cpu_seconds([p for s in servers for p in s.pids])
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{WRK_SECS}s", "-H", f"X-Auth-Token: {TOKEN}",
         url], capture_output=True, text=True, check=True).stdout
    spent = cpu_seconds([p for s in servers for p in s.pids]) - before
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk {url}: {errors.group(1)} non-2xx answers")
    if not servers:
        return rate
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return rate, 1e6 * spent / max(count, 1)


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
    if sys.argv[1:] not in ([], ["table"], ["resilience"]):
        sys.exit("usage: python3 benches/compare.py [table | resilience]\n" + __doc__)
    if sys.argv[1:] == ["resilience"]:
        return main_resilience()
    if sys.argv[1:] == ["table"]:
        return main_table()
    ensure_tools()
    features = []
    if subprocess.run(["pkg-config", "--exists", "openssl"], check=False).returncode == 0:
        features = ["--features", "openssl"]  # fills verified with OpenSSL's libcrypto
    else:
        log("building without the openssl feature: no OpenSSL development files "
            "(apt-get install -y libssl-dev pkg-config)")
    log(f"building the example server (release{', openssl' if features else ''})")
    subprocess.run(["cargo", "build", "--release", "-p", "tower-image-cache", "--example",
                    "image_server", *features],
                   cwd=ROOT, check=True)
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


def main_resilience():
    """The rows of the node's limits: 4 KiB hits with --authorization-cache-time 30 against
    --access-check trust, the default check and nginx; a 1 GiB fill whose upstream connection is
    cut at 40% (resumed with Range) against an uncut one, through the same relay."""
    ensure_tools()
    log("building the example server and image-cache-server (release)")
    subprocess.run(["cargo", "build", "--release", "-p", "tower-image-cache", "--example",
                    "image_server"], cwd=ROOT, check=True)
    # The node is the workspace's server crate.
    subprocess.run(["cargo", "build", "--release", "-p", "image-cache-server", "--bin",
                    "image-cache-server"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tic-resilience-")
    os.chmod(work, 0o755)
    servers, rows = [], []
    try:
        run_resilience(work, servers, rows)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)


def main_table():
    """The one method of the module's docstring."""
    ensure_tools()
    if subprocess.run(["pkg-config", "--exists", "openssl"], check=False).returncode != 0:
        sys.exit("the table is measured with --features openssl: apt-get install -y "
                 "libssl-dev pkg-config")
    log("building the example server (release, openssl)")
    subprocess.run(["cargo", "build", "--release", "-p", "tower-image-cache", "--example",
                    "image_server", "--example", "floor_server", "--features", "openssl"],
                   cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tic-table-")
    os.chmod(work, 0o755)  # nginx workers run as another user
    servers, rows = [], []
    try:
        run_table(work, servers, rows)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)


def run_table(work, servers, rows):
    limits = {algo: (openssl_speed(algo), openssl_speed_multi(algo)) for algo in ("sha512",
                                                                               "md5")}
    data = os.path.join(work, "data")
    files = {}
    for name, size in (("fill", 512 << 20), ("big", GIB), ("small", 4096)):
        files[name] = os.path.join(work, f"{name}.raw")
        make_file(files[name], size)
    # The same 512 MiB as an image with only an MD5 checksum (what the example records when
    # Glance's hashing_algorithm is off), uploaded first by a server without a cache.
    uploader = Server("upload-md5", data, "--no-cache", "--hashing-algorithm", "none")
    ids = {"fill-md5": upload(uploader, files["fill"])}
    uploader.stop()
    cache = Server("cache", data)
    servers.append(cache)
    ids.update({name: upload(cache, path) for name, path in files.items()})
    glance = NoauthGlance.start(work, files["fill"])
    if glance:
        servers.append(glance)
    for path in files.values():
        os.remove(path)
    trust = trust_server(work, data)
    servers.append(trust)
    nginx = Nginx(work, os.path.join(data, "images")) if have("nginx") else None
    if nginx:
        servers.append(nginx)

    def file_url(server, name):
        return f"{server.url}/v2/images/{ids[name]}/file"

    def cached(cache_dir, name):
        return os.path.exists(os.path.join(cache_dir, ids[name]))

    digest_thread = {"fill": [], "fill-md5": []}

    def our_fill(name):
        """The fill's rate; its digest's CPU time (from the fill's log line) is noted in
        `digest_thread`."""
        api("DELETE", f"{cache.url}/v2/cache/{ids[name]}")
        wait_for(lambda: not cached(f"{data}/cache", name), "the delete")
        secs, size, status = download(file_url(cache, name))
        assert status == "MISS" and size == 512 << 20, (status, size)
        wait_for(lambda: cached(f"{data}/cache", name), f"the fill of {name} commits")
        digest = cache.last_fill_digest_seconds(ids[name])
        if digest:
            digest_thread[name].append((size / digest, digest / secs))
        return size / secs

    log("512 MiB fills, interleaved: Glance's, the cache's (sha512), the cache's (md5 only)")
    fills = {"glance": [], "fill": [], "fill-md5": []}
    for _ in range(ROUNDS):
        if glance:
            fills["glance"].append(glance.fill_once())
        fills["fill"].append(our_fill("fill"))
        fills["fill-md5"].append(our_fill("fill-md5"))
    sha512_one, sha512_two = limits["sha512"]
    md5_one, md5_two = limits["md5"]
    rows.append(("512 MiB miss that fills, sha512", "cache (--features openssl)",
                 f"{mb(fills['fill'])} MB/s", ratio(fills["fill"], fills["glance"]),
                 ">= 1.2x Glance"))
    rows.append(("", "Glance 33's own cache fill (noauth, uWSGI, 1 process)",
                 f"{mb(fills['glance'])} MB/s" if glance else "-", "", ""))
    if sha512_one:
        rows.append(("", "openssl speed -evp sha512 (one core, the other idle)",
                     f"{sha512_one:.0f} MB/s", ratio(fills["fill"], [sha512_one * 1e6]),
                     ">= 0.9x"))
    if sha512_two:
        rows.append(("", "openssl speed -multi 2 -evp sha512, per core",
                     f"{sha512_two:.0f} MB/s", ratio(fills["fill"], [sha512_two * 1e6]), ""))
    digest_rows(digest_thread["fill"], sha512_one, rows)
    rows.append(("512 MiB miss that fills, MD5 only", "cache", f"{mb(fills['fill-md5'])} MB/s",
                 ratio(fills["fill-md5"], [md5_one * 1e6] if md5_one else []),
                 ">= 0.9x openssl md5"))
    if md5_one:
        rows.append(("", "openssl speed -evp md5 (one core)", f"{md5_one:.0f} MB/s", "", ""))
    if md5_two:
        rows.append(("", "openssl speed -multi 2 -evp md5, per core", f"{md5_two:.0f} MB/s",
                     ratio(fills["fill-md5"], [md5_two * 1e6]), ""))
    digest_rows(digest_thread["fill-md5"], md5_one, rows)

    first = warm_hits(((cache, f"{data}/cache"), (trust, f"{work}/trust-cache")), file_url,
                      cached)
    big_hit_rows(cache, nginx, file_url, rows)
    rows.append(("  the first hit after its fill", "cache (from the disk)",
                 f"{first['cache'] / 1e6:.0f} MB/s", "", ""))
    if have("wrk"):
        floor = Floor(work)
        servers.append(floor)
        small_hit_rows(cache, trust, nginx, file_url, 16, rows, floor=floor)


def digest_rows(measured, limit, rows):
    """What limits a fill: its digest's rate over its own CPU time (against `openssl speed`,
    MB/s) and the share of the fill's time it ran. A fill is at most their product."""
    if not measured:
        rows.append(("", "  its digest's CPU time", "- (not in the server's log)", "", ""))
        return
    rates, shares = [m[0] for m in measured], [m[1] for m in measured]
    rows.append(("", "  its digest: bytes per second of its own CPU time",
                 f"{mb(rates)} MB/s", ratio(rates, [limit * 1e6]) if limit else "", ""))
    rows.append(("", "  its digest: share of the fill's time it ran",
                 f"{100 * med(shares):.0f} %", "", ""))


def trust_server(work, data):
    """The example with --access-check trust over the same store, its cache in trust-cache/."""
    conf = os.path.join(work, "trust.conf")
    with open(conf, "w") as f:
        f.write(f"[DEFAULT]\nimage_cache_dir = {work}/trust-cache\n")
    return Server("trust", data, "--access-check", "trust", "--config-file", conf)


def warm_hits(servers, file_url, cached):
    """Caches the 1 GiB and the 4 KiB image on each (server, cache_dir), and reads each once
    from the cache: a fill writes its file with direct I/O, so its first hit reads the disk,
    where nginx's file is in the page cache from its upload. Returns the first 1 GiB hit's
    rate (B/s) of each server, by name."""
    first = {}
    for server, cache_dir in servers:
        for name in ("big", "small"):
            download(file_url(server, name))
            wait_for(lambda: cached(cache_dir, name), f"{server.name} caches {name}")
            secs, size, status = download(file_url(server, name))
            assert status == "HIT", status
            if name == "big":
                first[server.name] = size / secs
    return first


def big_hit_rows(cache, nginx, file_url, rows):
    """A 1 GiB hit, one client, interleaved with nginx: throughput and server CPU per GiB."""
    log("1 GiB hits, interleaved with nginx")
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
    rows.append(("", "nginx (sendfile)", f"{mb(ngx_rate)} MB/s" if nginx else "-", "", ""))
    rows.append(("  server CPU per GiB", "cache", f"{med(hit_cpu):.2f} s",
                 ratio(hit_cpu, ngx_cpu), "<= 1.2x nginx"))
    rows.append(("", "nginx", f"{med(ngx_cpu):.2f} s" if nginx else "-", "", ""))
    return hit_rate


def small_hit_rows(cache, trust, nginx, file_url, connections, rows, floor=None):
    """4 KiB hits with wrk, interleaved: the metadata check, trust, nginx and, when given, the
    floor (an axum server answering 4 KiB from memory); with the servers' CPU per request."""
    log(f"4 KiB hits, wrk -c{connections}, {WRK_SECS} s each, interleaved")
    rates = {"metadata": [], "trust": [], "nginx": [], "floor": []}
    cpu = {name: [] for name in rates}
    targets = [("metadata", cache, file_url(cache, "small")),
               ("trust", trust, file_url(trust, "small"))]
    if nginx:
        targets.append(("nginx", nginx, file_url(nginx, "small")))
    if floor:
        targets.append(("floor", floor, floor.url + "/v2/images/small/file"))
    for _ in range(ROUNDS):
        for name, server, url in targets:
            rate, us = wrk(url, connections, [server])
            rates[name].append(rate)
            cpu[name].append(us)
    rows.append((f"4 KiB hits, wrk -c{connections}", "cache, metadata check",
                 f"{med(rates['metadata']):.0f} req/s", ratio(rates["metadata"], rates["nginx"]),
                 ">= 0.6x nginx"))
    rows.append(("", "cache, trust", f"{med(rates['trust']):.0f} req/s",
                 ratio(rates["trust"], rates["nginx"]), ">= 0.9x nginx"))
    rows.append(("", "nginx", f"{med(rates['nginx']):.0f} req/s" if nginx else "-", "", ""))
    if floor:
        rows.append(("", "floor: axum answering 4 KiB from memory",
                     f"{med(rates['floor']):.0f} req/s", ratio(rates["floor"], rates["nginx"]),
                     ""))
    names = [("metadata", "cache, metadata check"), ("trust", "cache, trust"),
             ("nginx", "nginx"), ("floor", "floor")]
    for name, label in names:
        if cpu[name]:
            rows.append(("  server CPU per request" if name == "metadata" else "", label,
                         f"{med(cpu[name]):.1f} us",
                         ratio(cpu[name], cpu["floor"]) + " floor" if cpu["floor"] else "",
                         ""))


class CuttingRelay:
    """A TCP relay in front of an image API that, when armed, closes the first download it
    relays (a GET of .../file without Range) after `fraction` of `total` bytes: an upstream
    connection lost mid-image. Every other exchange is relayed whole."""

    def __init__(self, upstream_port, total, fraction):
        import socket
        self.total, self.fraction = total, fraction
        self.armed = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.upstream_port = upstream_port
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def pids(self):
        return []

    def stop(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        import socket
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        first = head.split(b"\r\n", 1)[0]
        lower = head.lower()
        cut = (first.startswith(b"GET ") and b"/file " in first and b"\r\nrange:" not in lower
               and self.armed.is_set())
        if cut:
            self.armed.clear()
        upstream.sendall(head)

        def requests():
            try:
                while True:
                    data = client.recv(1 << 20)
                    if not data:
                        break
                    upstream.sendall(data)
            except OSError:
                pass
        threading.Thread(target=requests, daemon=True).start()
        limit = int(self.total * self.fraction) if cut else None
        sent = 0
        buf = bytearray(1 << 20)
        try:
            while True:
                n = upstream.recv_into(buf)
                if not n:
                    break
                if limit is not None and sent + n >= limit:
                    client.sendall(buf[:limit - sent])
                    break
                client.sendall(buf[:n])
                sent += n
        except OSError:
            pass
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class Node:
    """image-cache-server in front of `upstream`, as a child process (no connection reuse)."""

    def __init__(self, work, upstream):
        binary = os.path.join(ROOT, "target/release/image-cache-server")
        self.log = open(os.path.join(work, "node.log"), "w")
        # A connection per upstream request, so the relay sees (and can cut) each one.
        config = os.path.join(work, "node.conf")
        with open(config, "w") as f:
            f.write(f"[DEFAULT]\nimage_cache_dir = {work}/node-cache\n"
                    f"[cache_server]\nupstream = {upstream}\nupstream_keepalive = false\n")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1:0", "--config-file", config],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "IMAGE_CACHE_SERVICE_TOKEN": TOKEN,
                 "IMAGE_CACHE_MANAGE_TOKEN": TOKEN, "RUST_LOG": "info"})
        line = self.proc.stdout.readline()
        self.url = re.search(r"http://[0-9.:]+", line).group(0)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pids(self):
        return [self.proc.pid]

    def stop(self):
        stop_process(self.proc, self.log)


def run_resilience(work, servers, rows):
    data = os.path.join(work, "data")
    small, big = os.path.join(work, "small.raw"), os.path.join(work, "big.raw")
    make_file(small, 4096)
    make_file(big, GIB)
    uploader = Server("uploader", data, "--no-cache")
    ids = {"small": upload(uploader, small), "big": upload(uploader, big)}
    uploader.stop()
    os.remove(small)
    os.remove(big)

    def conf(name):
        path = os.path.join(work, f"{name}.conf")
        with open(path, "w") as f:
            f.write(f"[DEFAULT]\nimage_cache_dir = {work}/{name}-cache\n")
        return path

    checked = Server("metadata", data, "--config-file", conf("metadata"))
    remembered = Server("remembered", data, "--authorization-cache-time", "30",
                        "--config-file", conf("remembered"))
    trust = Server("trust", data, "--access-check", "trust", "--config-file", conf("trust"))
    servers += [checked, remembered, trust]
    nginx = Nginx(work, os.path.join(data, "images")) if have("nginx") else None
    if nginx:
        servers.append(nginx)

    def file_url(server, name):
        return f"{server.url}/v2/images/{ids[name]}/file"

    for server in (checked, remembered, trust):
        download(file_url(server, "small"))
        time.sleep(0.5)
        assert download(file_url(server, "small"))[2] == "HIT"

    if have("wrk"):
        for connections in (16, 64):
            log(f"4 KiB hits, wrk -c{connections}, {WRK_SECS} s each")
            rates = {"metadata": [], "remembered": [], "trust": [], "nginx": []}
            for _ in range(ROUNDS):
                rates["metadata"].append(wrk(file_url(checked, "small"), connections))
                rates["remembered"].append(wrk(file_url(remembered, "small"), connections))
                rates["trust"].append(wrk(file_url(trust, "small"), connections))
                if nginx:
                    rates["nginx"].append(wrk(file_url(nginx, "small"), connections))
            rows.append((f"4 KiB hits, wrk -c{connections}", "authorization_cache_time 30",
                         f"{med(rates['remembered']):.0f} req/s",
                         ratio(rates["remembered"], rates["trust"]), ">= 0.8x trust"))
            rows.append(("", "metadata and download probe, every hit",
                         f"{med(rates['metadata']):.0f} req/s",
                         ratio(rates["metadata"], rates["trust"]), ""))
            rows.append(("", "trust", f"{med(rates['trust']):.0f} req/s",
                         ratio(rates["trust"], rates["nginx"]), "(vs nginx)"))
            rows.append(("", "nginx", f"{med(rates['nginx']):.0f} req/s" if nginx else "-",
                         "", ""))
    else:
        rows.append(("4 KiB hits", "-", "skipped: wrk is not installed", "", ""))
    for server in (checked, remembered, trust):
        server.stop()
    servers.clear()

    # A 1 GiB fill through a relay that cuts the upstream connection at 40%, against the same
    # fill uncut; the node in front of the example API without its own cache.
    api_server = Server("api", data, "--no-cache")
    servers.append(api_server)
    relay = CuttingRelay(int(api_server.url.rsplit(":", 1)[1]), GIB, 0.4)
    servers.append(relay)
    node = Node(work, relay.url)
    servers.append(node)
    url = f"{node.url}/v2/images/{ids['big']}/file"
    cache_dir = os.path.join(work, "node-cache")

    def uncache():
        api("DELETE", f"{node.url}/v2/cache/{ids['big']}")
        wait_for(lambda: not os.path.exists(os.path.join(cache_dir, ids["big"])), "the delete")
        wait_for(lambda: not os.listdir(os.path.join(cache_dir, "incomplete")), "no fill")

    def fill(cut):
        if cut:
            relay.armed.set()
        seconds, size, status = download(url)
        assert size == GIB and status == "MISS", (size, status)
        wait_for(lambda: os.path.exists(os.path.join(cache_dir, ids["big"])), "the commit")
        uncache()
        return seconds

    log("1 GiB fill, uncut and cut at 40% (resumed with Range)")
    uncut, resumed = [], []
    for _ in range(ROUNDS):
        uncut.append(fill(False))
        resumed.append(fill(True))
    with open(os.path.join(work, "node.log")) as f:
        resumes = f.read().count("asking again from the byte reached")
    rows.append(("1 GiB fill through a relay", "cut at 40%, resumed", f"{med(resumed):.2f} s",
                 f"{med(resumed) / med(uncut):.2f}x", "<= 1.1x uncut"))
    rows.append(("", "uncut", f"{med(uncut):.2f} s", "", ""))
    rows.append(("", "resumes logged", f"{resumes} (of {ROUNDS} cuts)", "", ""))


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n


def run(work, servers, rows):
    # The digests' limits first, while nothing else runs.
    limits = {algo: openssl_speed(algo) for algo in ("sha512", "sha256", "md5")}
    data = os.path.join(work, "data")
    files = {}
    for name, size in (("big", GIB), ("mid", 256 << 20), ("small", 4096)):
        files[name] = os.path.join(work, f"{name}.raw")
        make_file(files[name], size)

    # The same gigabyte as images with a sha256 multihash and with only an MD5 checksum (the
    # example records what Glance's hashing_algorithm says), and as three more sha512 images.
    ids = {}
    for name, algorithm in (("big-sha256", "sha256"), ("big-md5", "none")):
        uploader = Server(f"upload-{algorithm}", data, "--no-cache", "--hashing-algorithm",
                          algorithm)
        ids[name] = upload(uploader, files["big"])
        uploader.stop()
    cache = Server("cache", data, env={"RUST_LOG": "info"})
    servers.append(cache)
    ids.update({name: upload(cache, path) for name, path in files.items()})
    for name in ("big2", "big3", "big4"):
        ids[name] = upload(cache, files["big"])
    glance = Glance.start(work, files["big"])
    if glance:
        servers.append(glance)
    for path in files.values():
        os.remove(path)
    trust = trust_server(work, data)
    plain = Server("no-cache", data, "--no-cache")
    servers += [trust, plain]
    nginx = Nginx(work, os.path.join(data, "images")) if have("nginx") else None
    if nginx:
        servers.append(nginx)

    def file_url(server, name):
        return f"{server.url}/v2/images/{ids[name]}/file"

    def cached(server_dir, name):
        return os.path.exists(os.path.join(server_dir, ids[name]))

    warm_hits(((cache, f"{data}/cache"), (trust, f"{work}/trust-cache")), file_url, cached)
    hit_rate = big_hit_rows(cache, nginx, file_url, rows)

    if glance:
        log("Glance 33: 1 GiB miss (its cache fills) and hit")
        glance_miss, glance_hit = glance.miss_and_hit(ROUNDS)
        rows.append(("", "Glance 33, from its cache", f"{mb(glance_hit)} MB/s",
                     ratio(hit_rate, glance_hit), "(cache / Glance)"))

    # 1 GiB misses that fill, verified with each kind of digest, against --no-cache, Glance's
    # own fill and the digest's speed on one core.
    log("1 GiB misses")
    miss = {"big": [], "big-sha256": [], "big-md5": []}
    plain_rate = []

    def uncache(names):
        for name in names:
            api("DELETE", f"{cache.url}/v2/cache/{ids[name]}")
        wait_for(lambda: not any(cached(f"{data}/cache", n) for n in names), "the delete")

    for _ in range(ROUNDS):
        for name, rates in miss.items():
            uncache([name])
            secs, size, status = download(file_url(cache, name))
            assert status == "MISS", status
            rates.append(size / secs)
            wait_for(lambda: cached(f"{data}/cache", name), f"the fill of {name} commits")
        secs, size, _ = download(file_url(plain, "big"))
        plain_rate.append(size / secs)
    sha512_target = [x for x in (limits["sha512"] and 0.9 * limits["sha512"] * 1e6,
                                 glance and 1.2 * med(glance_miss)) if x]
    rows.append(("1 GiB miss, sha512 multihash", "cache", f"{mb(miss['big'])} MB/s",
                 ratio(miss["big"], [max(sha512_target)] if sha512_target else []),
                 ">= 0.9x openssl sha512 and >= 1.2x Glance (ratio to the larger)"))
    if limits["sha512"]:
        rows.append(("", "openssl speed -evp sha512", f"{limits['sha512']:.0f} MB/s",
                     ratio(miss["big"], [limits["sha512"] * 1e6]), ""))
    if glance:
        rows.append(("", "Glance 33, its cache filling", f"{mb(glance_miss)} MB/s",
                     ratio(miss["big"], glance_miss), ""))
    sha256_limit = min([med(plain_rate)] + ([limits["sha256"] * 1e6] if limits["sha256"] else []))
    rows.append(("1 GiB miss, sha256 multihash", "cache", f"{mb(miss['big-sha256'])} MB/s",
                 ratio(miss["big-sha256"], [sha256_limit]),
                 ">= 0.9x min(--no-cache, openssl sha256)"))
    if limits["sha256"]:
        rows.append(("", "openssl speed -evp sha256", f"{limits['sha256']:.0f} MB/s", "", ""))
    rows.append(("1 GiB miss, MD5 only", "cache", f"{mb(miss['big-md5'])} MB/s",
                 ratio(miss["big-md5"], [limits["md5"] * 1e6] if limits["md5"] else []),
                 ">= 0.9x openssl md5"))
    if limits["md5"]:
        rows.append(("", "openssl speed -evp md5", f"{limits['md5']:.0f} MB/s", "", ""))
    rows.append(("1 GiB, no cache", "--no-cache", f"{mb(plain_rate)} MB/s", "", ""))

    # Four different 1 GiB images filled at once, against one fill (the sha512 miss above).
    log("4 different 1 GiB images filled at once")
    four = ["big", "big2", "big3", "big4"]
    together = []
    for _ in range(ROUNDS):
        uncache(four)
        started = time.monotonic()
        clients = [subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {TOKEN}", "-w",
             "%{http_code} %{size_download}", file_url(cache, name)],
            stdout=subprocess.PIPE, text=True) for name in four]
        answers = [c.communicate()[0] for c in clients]
        together.append(4 * GIB / (time.monotonic() - started))
        assert all(a == f"200 {GIB}" for a in answers), answers
        wait_for(lambda: all(cached(f"{data}/cache", n) for n in four), "the four fills")
    rows.append(("4 different 1 GiB fills at once", "cache, aggregate",
                 f"{mb(together)} MB/s", ratio(together, miss["big"]), ">= 1.6x one fill"))

    # 4 KiB hits with wrk.
    if have("wrk"):
        for connections in (16, 64):
            small_hit_rows(cache, trust, nginx, file_url, connections, rows)

    # 32 concurrent cold GETs of one 256 MiB image against 32 concurrent hits of it.
    log("32 concurrent GETs of 256 MiB, cold and cached")
    hits32, cold32, reads = [], [], []

    def cold():
        api("DELETE", f"{cache.url}/v2/cache/{ids['mid']}")
        wait_for(lambda: not cached(f"{data}/cache", "mid"), "the delete")
        wait_for(lambda: not os.listdir(f"{data}/cache/incomplete"), "no fill running")

    def store_reads():
        with open(os.path.join(work, "cache.log")) as f:
            return f.read().count("reading image data")

    def thirty_two():
        started = time.monotonic()
        clients = [subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-H", f"X-Auth-Token: {TOKEN}", "-w",
             "%{http_code} %{size_download}", file_url(cache, "mid")],
            stdout=subprocess.PIPE, text=True) for _ in range(32)]
        answers = [c.communicate()[0] for c in clients]
        assert all(a == f"200 {256 << 20}" for a in answers), answers
        return time.monotonic() - started

    for _ in range(ROUNDS):
        if not cached(f"{data}/cache", "mid"):
            download(file_url(cache, "mid"))
            wait_for(lambda: cached(f"{data}/cache", "mid"), "the fill commits")
        hits32.append(thirty_two())
        cold()
        before = store_reads()
        cold32.append(thirty_two())
        time.sleep(0.5)
        reads.append(store_reads() - before)
        wait_for(lambda: cached(f"{data}/cache", "mid"), "the fill commits")
    rows.append(("32 GETs of 256 MiB at once", "cold, wall", f"{med(cold32):.2f} s",
                 f"{med(cold32) / med(hits32):.2f}x", "<= 1.2x 32 hits"))
    rows.append(("", "cached (32 hits), wall", f"{med(hits32):.2f} s", "", ""))
    rows.append(("", "image store reads (cold)", f"{max(reads)} (per round: {reads})", "",
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

    api("DELETE", f"{fresh.url}/v2/cache/{ids['big2']}")  # the ninth download fills
    wait_for(lambda: not cached(f"{data}/cache", "big2"), "the delete")
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
