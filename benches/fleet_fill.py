#!/usr/bin/env python3
"""The fleet reads the backend once: N `image-cache-server` processes (3 and 8) sharing the
machine's PostgreSQL (a database of the bench's own, dropped after) and a `peer_token`, in front
of the example image server with `--no-cache` and its store throttled to 200 MiB/s
(`--backend-rate`), a 1 GiB image with a SHA-512 multihash:

- sequential: one node is asked for the image (a cold fill from the backend), then each other
  node in turn (a peer fill); the upstream bytes are the nodes' own count
  (`image_cache_bytes_total{source="upstream"}`, summed), and the peer fills' rate is set
  against a node's own verified fill from an unthrottled upstream, measured beside each;
- cold rollout: a new image, every node asked at once by 4 clients each; the upstream bytes,
  and the wall time against one node alone asked by 4 clients (and against one cold fill with
  one client), with the CPU every process of the rollout used;
- two sites (as root, with iproute2): an edge site in a network namespace of the bench's own,
  joined by a veth pair shaped to 100 Mbit/s with 20 ms of delay each way (`netem`, or where
  the kernel has none, `tbf` and relays that hold each chunk 20 ms), the backend, the database and one node on the core side, two nodes at the edge
  (`peer_zone`); the bytes across the link per image (the veth's counters), one after another
  with zones and without, and for a rollout at the edge (FLEET_WAN_MIB, 128 by default).

    python3 benches/fleet_fill.py            # about 5 minutes; FLEET_NODES=3,8 FLEET_MIB=1024
                                             # FLEET_KEEP=1 keeps the nodes' logs

The model it checks (docs/operators.md, section 7): with peers, the backend is read once per
image per fleet, whatever N; each further copy is a LAN read at the nodes' own speed; with
zones, each site's link carries each image once.
"""

import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the example server, uploads, downloads, logs)

ROOT = compare.ROOT
TOKEN = compare.TOKEN
PEER_TOKEN = "fleet-bench-secret"


def psql(sql, database="postgres"):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql],
                   check=True, capture_output=True)


class Node:
    """One image-cache-server of the fleet, configured by a file as an operator writes it."""

    def __init__(self, work, name, upstream, database, host="127.0.0.1", netns=None, zone=None,
                 port=None, advertised=None):
        """`advertised` is the URL its peers reach it at (`worker_self_reference_url`), when
        it is not its own (a relay on the link in front of it)."""
        port = port or compare.free_port()
        self.url = f"http://{host}:{port}"
        self.root = root = os.path.join(work, name)
        os.makedirs(root)
        config = os.path.join(root, "glance-api.conf")
        with open(config, "w") as f:
            f.write(
                f"[DEFAULT]\nimage_cache_dir = {root}/cache\nbind_host = {host}\n"
                f"bind_port = {port}\nimage_cache_max_size = 8589934592\n"
                + (f"image_cache_driver = centralized_db\n"
                   f"worker_self_reference_url = {advertised or self.url}\n\n"
                   f"[database]\nconnection = {database}\n" if database else "")
                + "\n"
                f"[cache_server]\nupstream = {upstream}\nservice_token = {TOKEN}\n"
                f"manage_token = {TOKEN}\npeer_token = {PEER_TOKEN}\nshutdown_grace = 1\n"
                + (f"peer_zone = {zone}\n" if zone else ""))
        self.log = open(os.path.join(root, "node.log"), "w")
        inside = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen(
            [*inside, os.path.join(ROOT, "target/release/image-cache-server"), "--config-file",
             config],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"node {name} did not start: {line!r}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def metric(self, line):
        with urllib.request.urlopen(self.url + "/metrics") as response:
            text = response.read().decode()
        for row in text.splitlines():
            if row.startswith(line + " "):
                return float(row.split()[-1])
        return 0.0

    def stop(self):
        compare.stop_process(self.proc, self.log)


def upstream_bytes(nodes):
    return sum(n.metric('image_cache_bytes_total{source="upstream"}') for n in nodes)


def peer_bytes(nodes):
    """Bytes the nodes read from peers: their copies, and their fills in progress followed."""
    return sum(n.metric(f'image_cache_bytes_total{{source="{source}"}}') for n in nodes
               for source in ("peer", "follow"))


class OwnFill:
    """A node of no fleet in front of an unthrottled upstream: its own verified fill of the
    image, the rate a peer fill is set against. Measured again beside each peer fill (A B A B),
    as this machine's speed drifts by a quarter within an hour."""

    def __init__(self, image_file, size, work):
        self.size = size
        self.upstream = compare.Server("fast-upstream", os.path.join(work, "fast-upstream"),
                                       "--no-cache")
        self.node = Node(work, "solo", self.upstream.url, None)
        self.image = compare.upload(self.upstream, image_file)
        self.rates = []

    def measure(self):
        """One fill (the cached copy deleted first); its rate is kept in `rates`."""
        compare.api("DELETE", f"{self.node.url}/v2/cache/{self.image}")
        compare.wait_for(lambda: not os.path.exists(os.path.join(self.node.root, "cache",
                                                                 self.image)), "the delete")
        seconds, got, status = compare.download(f"{self.node.url}/v2/images/{self.image}/file")
        assert got == self.size and status == "MISS", (got, status)
        self.rates.append(self.size / seconds)

    def median(self):
        return sorted(self.rates)[len(self.rates) // 2]

    def stop(self):
        self.node.stop()
        self.upstream.stop()


def clients_cpu():
    """CPU seconds of this process's children that ended: the curl clients."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def rollout(urls, netns=None):
    """Every URL downloaded by 4 clients at once (in `netns` when given): the wall time, and
    each download's (seconds, bytes, cache status)."""
    results = []
    threads = [threading.Thread(target=lambda u=u: results.append(
        compare.download(u, netns=netns))) for u in urls for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, results


def scenario(count, image_file, size, upstream, work, database, rows, own):
    nodes = [Node(work, f"{count}-{i}", upstream.url, database) for i in range(count)]
    try:
        time.sleep(1.5)  # every node registered in the fleet's table
        # Sequential: a cold fill, then each other node from its peers.
        first = compare.upload(upstream, image_file)
        url = lambda node, image: f"{node.url}/v2/images/{image}/file"  # noqa: E731
        cold, got, status = compare.download(url(nodes[0], first))
        assert got == size and status == "MISS", (got, status)
        time.sleep(2)  # the commit's row reaches the fleet's table
        peer_times, own.rates = [], []
        for node in nodes[1:]:
            own.measure()
            seconds, got, status = compare.download(url(node, first))
            assert got == size, got
            peer_times.append(seconds)
        read = upstream_bytes(nodes)
        peer_median = sorted(peer_times)[len(peer_times) // 2]
        rows.append((f"{count} nodes, sequential", "upstream bytes", f"{read / size:.2f}x image",
                     "= 1.0x"))
        rows.append(("", "first node's cold fill", f"{size / cold / 1e6:.0f} MB/s", ""))
        peer_rate = size / peer_median
        rows.append(("", "a peer fill (median)", f"{peer_rate / 1e6:.0f} MB/s",
                     f"{peer_rate / own.median():.2f}x a node's own verified fill, "
                     f"{own.median() / 1e6:.0f} MB/s, measured beside it (>= 0.8x)"))
        # One node alone asked by 4 clients (the load each node of the rollout gets), then the
        # rollout: a new image, all nodes at once, 4 clients each.
        alone_image = compare.upload(upstream, image_file)
        alone, results = rollout([url(nodes[0], alone_image)])
        assert all(r[1] == size for r in results), results
        rows.append(("", "one node alone, 4 clients, cold", f"{alone:.1f} s", ""))
        second = compare.upload(upstream, image_file)
        before = upstream_bytes(nodes)
        pids = [node.proc.pid for node in nodes] + upstream.pids
        cpu_before = compare.cpu_seconds(pids) + clients_cpu()
        wall, results = rollout([url(node, second) for node in nodes])
        cpu = compare.cpu_seconds(pids) + clients_cpu() - cpu_before
        assert len(results) == 4 * count and all(r[1] == size for r in results), results
        read = upstream_bytes(nodes) - before
        rows.append((f"{count} nodes, cold rollout (4 clients each)", "upstream bytes",
                     f"{read / size:.2f}x image", "= 1.0x"))
        rows.append(("", "wall time", f"{wall:.1f} s",
                     f"{wall / alone:.2f}x one node alone with 4 clients, {wall / cold:.2f}x "
                     "one cold fill with 1 (<= 1.3x)"))
        cores = os.cpu_count()
        rows.append(("", "CPU of the nodes, the backend and the clients", f"{cpu:.1f} s",
                     f"{cpu / cores:.1f} s of wall on {cores} cores at the least "
                     f"({cpu / cores / alone:.2f}x one node alone)"))
        rows.append(("", "bytes read from peers", f"{peer_bytes(nodes) / size:.2f}x image",
                     f"model: {2 * (count - 1)} (N-1 per image)"))
    finally:
        for node in nodes:
            node.stop()


class Sites:
    """The edge site: a network namespace joined by a shaped veth pair; `down()` removes it."""

    def __init__(self):
        pid = os.getpid()
        self.netns, self.outer, inner = f"tic-bench-{pid}", f"ticb{pid % 100000}", \
            f"ticd{pid % 100000}"
        subnet = 64 + pid % 128
        self.core, self.edge = f"10.214.{subnet}.1", f"10.214.{subnet}.2"
        ip = lambda *args: subprocess.run(["ip", *args], check=True,  # noqa: E731
                                          capture_output=True)
        inside = lambda *args: ip("netns", "exec", self.netns, *args)  # noqa: E731
        ip("netns", "add", self.netns)
        try:
            ip("link", "add", self.outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", self.netns)
            ip("addr", "add", f"{self.core}/30", "dev", self.outer)
            ip("link", "set", self.outer, "up")
            inside("ip", "addr", "add", f"{self.edge}/30", "dev", inner)
            inside("ip", "link", "set", inner, "up")
            inside("ip", "link", "set", "lo", "up")
            self.shaping, self.delay = "netem 100 Mbit/s, 20 ms each way", 0.0
            for device, prefix in ((self.outer, []), (inner, ["ip", "netns", "exec", self.netns])):
                qdisc = [*prefix, "tc", "qdisc", "add", "dev", device, "root"]
                netem = subprocess.run([*qdisc, "netem", "rate", "100mbit", "delay", "20ms"],
                                       capture_output=True)
                if netem.returncode != 0:
                    subprocess.run([*qdisc, "tbf", "rate", "100mbit", "burst", "128kb",
                                    "latency", "100ms"], check=True, capture_output=True)
                    self.shaping = ("tbf 100 Mbit/s, and 20 ms each way in the bench's relays "
                                    "(no netem in this kernel)")
                    self.delay = 0.020
        except Exception:
            self.down()
            raise

    def crossed(self):
        """Bytes sent across the link into the edge site so far."""
        with open(f"/sys/class/net/{self.outer}/statistics/tx_bytes") as f:
            return int(f.read())

    def down(self):
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)


class Relay:
    """A TCP relay on the link's core address, for the edge site's connections to a service on
    the core side: the machine's PostgreSQL (which listens on 127.0.0.1 only), the upstream,
    the core node's peer route.

    Where the kernel has no `netem`, the relay gives the link its delay: each chunk it reads is
    sent on `delay` seconds later, in each direction, with at most `WINDOW` bytes held per
    direction (about the link's bandwidth-delay product), so a sender still feels the link's
    pace. The relay ends each TCP connection, so the two legs' own windows and retransmits see
    no delay: it delays requests, answers and every database round trip, not TCP's ramp-up."""

    WINDOW = 256 << 10

    def __init__(self, host, target=("127.0.0.1", 5432), delay=0.0):
        import socket
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]

        def close(*ends):
            for end in ends:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def pipe(source, sink):
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                close(source, sink)

        def delayed_pipe(source, sink):
            held, lock = [], threading.Condition()
            state = {"bytes": 0, "ended": False}

            def send():
                try:
                    while True:
                        with lock:
                            while not held and not state["ended"]:
                                lock.wait()
                            if not held:
                                return
                            due, data = held.pop(0)
                        if (wait := due - time.monotonic()) > 0:
                            time.sleep(wait)
                        sink.sendall(data)
                        with lock:
                            state["bytes"] -= len(data)
                            lock.notify_all()
                except OSError:
                    with lock:  # the reader waits for room no more
                        held.clear()
                        state["bytes"] = -(1 << 62)
                        lock.notify_all()
                finally:
                    close(source, sink)

            threading.Thread(target=send, daemon=True).start()
            try:
                while data := source.recv(65536):
                    with lock:
                        while state["bytes"] >= self.WINDOW:
                            lock.wait()
                        held.append((time.monotonic() + delay, data))
                        state["bytes"] += len(data)
                        lock.notify_all()
            except OSError:
                pass
            finally:
                with lock:
                    state["ended"] = True
                    lock.notify_all()

        def accept():
            while True:
                try:
                    client, _ = self.listener.accept()
                except OSError:
                    return
                server = socket.create_connection(target)
                for ends in ((client, server), (server, client)):
                    threading.Thread(target=delayed_pipe if delay else pipe, args=ends,
                                     daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    @property
    def url(self):
        host, port = self.listener.getsockname()
        return f"http://{host}:{port}"

    def stop(self):
        self.listener.close()


def two_sites(work, database, rows):
    """The edge site's link, in bytes per image: with zones, one after another and at once;
    without zones, one after another (the edge's second node then reads the core node)."""
    if os.geteuid() != 0 or subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        rows.append(("two sites", "skipped", "needs root and iproute2", ""))
        return
    mib = int(os.environ.get("FLEET_WAN_MIB", "128"))
    size = mib << 20
    image_file = os.path.join(work, "wan.raw")
    with open(image_file, "wb") as f:
        f.write(os.urandom(size))
    sites = Sites()
    nodes, upstream, relays = [], None, []
    try:
        compare.log(f"two sites ({sites.shaping}), a {mib} MiB image")
        upstream = compare.Server("wan-upstream", os.path.join(work, "wan-upstream"),
                                  "--no-cache", bind=f"{sites.core}:0")
        # What the edge reaches across the link: the database, the upstream and the core node.
        relays.append(Relay(sites.core, delay=sites.delay))
        across = database.replace("127.0.0.1:5432", f"{sites.core}:{relays[-1].port}")
        upstream_port = int(upstream.url.rsplit(":", 1)[1])
        relays.append(Relay(sites.core, (sites.core, upstream_port), delay=sites.delay))
        upstream_across = relays[-1].url
        url = lambda node, image: f"{node.url}/v2/images/{image}/file"  # noqa: E731
        for zones in (True, False):
            label = "with peer_zone" if zones else "without peer_zone"
            tag = "z" if zones else "n"
            core_port = compare.free_port()
            relays.append(Relay(sites.core, (sites.core, core_port), delay=sites.delay))
            core = Node(work, f"core-{tag}", upstream.url, database, host=sites.core,
                        zone="core" if zones else None, port=core_port,
                        advertised=relays[-1].url)
            edges = [Node(work, f"edge{i}-{tag}", upstream_across, across, host=sites.edge,
                          netns=sites.netns, zone="edge" if zones else None) for i in (1, 2)]
            nodes += [core, *edges]
            time.sleep(2)  # every node registered (and its zone)
            image = compare.upload(upstream, image_file)
            compare.download(url(core, image))
            time.sleep(2)  # the core node's row reaches the fleet's table
            before = sites.crossed()
            started = time.monotonic()
            for edge in edges:
                # The edge site's clients are at the edge: only the fills cross the link.
                _, got, _ = compare.download(url(edge, image), netns=sites.netns)
                assert got == size, got
                time.sleep(2)
            crossed = sites.crossed() - before
            rows.append((f"two sites, one after another, {label}",
                         "bytes into the edge site", f"{crossed / size:.2f}x image",
                         "model: 1 per site" if zones else "model: 1 per node (2)"))
            if not zones:
                break
            rows.append(("", "the edge's two fills", f"{time.monotonic() - started - 4:.1f} s",
                         f"one crossing at 100 Mbit/s: {size * 8 / 100e6:.1f} s"))
            image = compare.upload(upstream, image_file)
            before = sites.crossed()
            wall, results = rollout([url(n, image) for n in edges], netns=sites.netns)
            assert all(r[1] == size for r in results), results
            crossed = sites.crossed() - before
            rows.append(("two sites, rollout at the edge (2 nodes, 4 clients each)",
                         "bytes into the edge site", f"{crossed / size:.2f}x image",
                         "model: 1 per site"))
            rows.append(("", "wall time", f"{wall:.1f} s",
                         f"{wall / (size * 8 / 100e6):.2f}x one crossing"))
            for node in [core, *edges]:
                node.stop()
    finally:
        for node in nodes:
            node.stop()
        for relay in relays:
            relay.stop()
        if upstream:
            upstream.stop()
        sites.down()


def main():
    if sys.argv[1:]:
        sys.exit("usage: python3 benches/fleet_fill.py\n" + __doc__)
    sizes = [int(n) for n in os.environ.get("FLEET_NODES", "3,8").split(",") if n]
    mib = int(os.environ.get("FLEET_MIB", "1024"))
    if subprocess.run(["psql", "--version"], capture_output=True).returncode != 0:
        sys.exit("fleet_fill.py needs psql and the machine's PostgreSQL (127.0.0.1:5432)")
    compare.log("building the example server and image-cache-server (release)")
    subprocess.run(["cargo", "build", "--release", "-p", "tower-image-cache", "--example",
                    "image_server"], cwd=ROOT, check=True)
    # As an operator builds it for speed: ring has SHA-512's vector code for Intel CPUs only,
    # so on others (this AMD EPYC) libcrypto's SHA-512 is about a quarter faster.
    features = []
    if subprocess.run(["pkg-config", "--exists", "openssl"], check=False).returncode == 0:
        features = ["--features", "openssl"]
    else:
        compare.log("OpenSSL's development files are missing (apt-get install -y libssl-dev "
                    "pkg-config): the nodes verify with ring, slower on CPUs other than Intel's")
    subprocess.run(["cargo", "build", "--release", "-p", "image-cache-server", "--bin",
                    "image-cache-server", *features], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tic-fleet-")
    name = f"fleet_bench_{os.getpid()}"
    psql(f"CREATE DATABASE {name}")
    database = f"postgresql://postgres@127.0.0.1:5432/{name}"
    upstream = None
    rows = []
    try:
        image_file = os.path.join(work, "image.raw")
        with open(image_file, "wb") as f:
            f.write(os.urandom(mib << 20))
        upstream = compare.Server("upstream", os.path.join(work, "upstream"), "--no-cache",
                                  "--backend-rate", "200MiB")
        own = OwnFill(image_file, mib << 20, work)
        try:
            for count in sizes:
                compare.log(f"{count} nodes")
                scenario(count, image_file, mib << 20, upstream, work, database, rows, own)
        finally:
            own.stop()
        os.remove(image_file)
        two_sites(work, database, rows)
    finally:
        if upstream:
            upstream.stop()
        if os.environ.get("FLEET_KEEP"):
            print(f"the nodes' logs are kept in {work}")
        else:
            subprocess.run(["rm", "-rf", work])
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, a {mib} MiB image, the "
          "backend at 200 MiB/s\n")
    print("| scenario | measure | result | against |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
