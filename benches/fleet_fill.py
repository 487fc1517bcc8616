#!/usr/bin/env python3
"""The fleet reads the backend once: N `image-cache-server` processes (3 and 8) sharing the
machine's PostgreSQL (a database of the bench's own, dropped after) and a `peer_token`, in front
of the example image server with `--no-cache` and its store throttled to 200 MiB/s
(`--backend-rate`), a 1 GiB image with a SHA-512 multihash:

- sequential: one node is asked for the image (a cold fill from the backend), then each other
  node in turn (a peer fill); the upstream bytes are the nodes' own count
  (`image_cache_bytes_total{source="upstream"}`, summed), and each peer fill's rate is set
  against the first node's verified fill;
- cold rollout: a new image, every node asked at once by 4 clients each; the upstream bytes,
  and the wall time against one node's cold fill alone.

    python3 benches/fleet_fill.py            # about 3 minutes; FLEET_NODES=3,8 FLEET_MIB=1024

The model it checks (docs/operators.md, section 7): with peers, the backend is read once per
image per fleet, whatever N; each further copy is a LAN read at the nodes' own speed.
"""

import os
import re
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

    def __init__(self, work, name, upstream, database):
        port = compare.free_port()
        self.url = f"http://127.0.0.1:{port}"
        root = os.path.join(work, name)
        os.makedirs(root)
        config = os.path.join(root, "glance-api.conf")
        with open(config, "w") as f:
            f.write(
                f"[DEFAULT]\nimage_cache_dir = {root}/cache\nbind_host = 127.0.0.1\n"
                f"bind_port = {port}\nimage_cache_driver = centralized_db\n"
                f"worker_self_reference_url = {self.url}\nimage_cache_max_size = 8589934592\n\n"
                f"[database]\nconnection = {database}\n\n"
                f"[cache_server]\nupstream = {upstream}\nservice_token = {TOKEN}\n"
                f"manage_token = {TOKEN}\npeer_token = {PEER_TOKEN}\nshutdown_grace = 1\n")
        self.log = open(os.path.join(root, "node.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "target/release/image-cache-server"), "--config-file", config],
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
    return sum(n.metric('image_cache_bytes_total{source="peer"}') for n in nodes)


def own_fill_rate(image_file, size, work, database):
    """A node's own verified fill from an unthrottled upstream (the rate a peer fill is set
    against), in bytes per second."""
    fast = compare.Server("fast-upstream", os.path.join(work, "fast-upstream"), "--no-cache")
    node = Node(work, "solo", fast.url, database)
    try:
        image = compare.upload(fast, image_file)
        seconds, got, status = compare.download(f"{node.url}/v2/images/{image}/file")
        assert got == size and status == "MISS", (got, status)
        return size / seconds
    finally:
        node.stop()
        fast.stop()


def scenario(count, image_file, size, upstream, work, database, rows, own_rate):
    nodes = [Node(work, f"{count}-{i}", upstream.url, database) for i in range(count)]
    try:
        time.sleep(1.5)  # every node registered in the fleet's table
        # Sequential: a cold fill, then each other node from its peers.
        first = compare.upload(upstream, image_file)
        url = lambda node, image: f"{node.url}/v2/images/{image}/file"  # noqa: E731
        cold, got, status = compare.download(url(nodes[0], first))
        assert got == size and status == "MISS", (got, status)
        time.sleep(2)  # the commit's row reaches the fleet's table
        peer_times = []
        for node in nodes[1:]:
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
                     f"{peer_rate / own_rate:.2f}x a node's own verified fill (>= 0.8x)"))
        # Cold rollout: a new image, all nodes at once, 4 clients each.
        second = compare.upload(upstream, image_file)
        before = upstream_bytes(nodes)
        results = []

        def client(node):
            results.append(compare.download(url(node, second)))

        threads = [threading.Thread(target=client, args=(node,))
                   for node in nodes for _ in range(4)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        assert len(results) == 4 * count and all(r[1] == size for r in results), results
        read = upstream_bytes(nodes) - before
        rows.append((f"{count} nodes, cold rollout (4 clients each)", "upstream bytes",
                     f"{read / size:.2f}x image", "= 1.0x"))
        rows.append(("", "wall time", f"{wall:.1f} s",
                     f"{wall / cold:.2f}x one node's cold fill (<= 1.3x)"))
        rows.append(("", "bytes read from peers", f"{peer_bytes(nodes) / size:.2f}x image",
                     f"model: {2 * (count - 1)} (N-1 per image)"))
    finally:
        for node in nodes:
            node.stop()


def main():
    if sys.argv[1:]:
        sys.exit("usage: python3 benches/fleet_fill.py\n" + __doc__)
    sizes = [int(n) for n in os.environ.get("FLEET_NODES", "3,8").split(",")]
    mib = int(os.environ.get("FLEET_MIB", "1024"))
    if subprocess.run(["psql", "--version"], capture_output=True).returncode != 0:
        sys.exit("fleet_fill.py needs psql and the machine's PostgreSQL (127.0.0.1:5432)")
    compare.log("building the example server and image-cache-server (release)")
    subprocess.run(["cargo", "build", "--release", "-p", "tower-image-cache", "--example",
                    "image_server"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "image-cache-server", "--bin",
                    "image-cache-server"], cwd=ROOT, check=True)
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
        compare.log("a node's own verified fill, unthrottled")
        own_rate = own_fill_rate(image_file, mib << 20, work, database)
        rows.append(("1 node, unthrottled upstream", "its own verified fill",
                     f"{own_rate / 1e6:.0f} MB/s", ""))
        for count in sizes:
            compare.log(f"{count} nodes")
            scenario(count, image_file, mib << 20, upstream, work, database, rows, own_rate)
    finally:
        if upstream:
            upstream.stop()
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
