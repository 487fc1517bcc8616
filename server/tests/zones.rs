//! Sites and tiers, with real `image-cache-server` processes on the real PostgreSQL:
//!
//! - Two sites joined by a thin link of the test's own: a network namespace for the edge site,
//!   a veth pair shaped to 100 Mbit/s (with 20 ms of delay where the kernel has `netem`), the
//!   upstream, the database and one node on the core side. With `[cache_server] peer_zone`,
//!   the edge site reads each image across the link once, however its nodes are asked.
//! - An edge tier whose upstream is a node of a regional tier: the backend is read once.
//!
//! The namespace tests need root and iproute2 (CI runs as root); elsewhere they print
//! `SKIPPED` and pass, unless `CI` is set.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/db.rs"]
#[allow(dead_code)] // the helpers of the library's central tests too
mod db;
mod nodes;
#[path = "../../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::example::{get_as, wait_listed};
use common::metric;
use common::raw_upstream::{Mode, RawUpstream};
use db::{Server, TestDb};
use nodes::{start_node_on, Host, Node, ADMIN, PEER_TOKEN};
use proxy::DbProxy;

const SIZE: usize = 8 * 1024 * 1024 + 5;

/// The edge site: a network namespace joined to the test's own by a shaped veth pair; taken
/// down when dropped.
struct Site {
    netns: String,
    /// The veth end on the core side.
    outer: String,
    core: IpAddr,
    edge: IpAddr,
    shaping: &'static str,
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("{program} could not run: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{program} {}: {}", args.join(" "), stderr.trim()))
    }
}

impl Site {
    /// The site, or `None` after printing why where namespaces cannot be made (not root, no
    /// iproute2) and `CI` is not set.
    fn up() -> Option<Site> {
        let pid = std::process::id();
        let subnet = 64 + pid % 128;
        let mut site = Site {
            netns: format!("tic-edge-{pid}"),
            outer: format!("ticc{}", pid % 100_000),
            core: format!("10.213.{subnet}.1").parse().unwrap(),
            edge: format!("10.213.{subnet}.2").parse().unwrap(),
            shaping: "",
        };
        match site.build() {
            Ok(shaping) => {
                site.shaping = shaping;
                Some(site)
            }
            Err(err) => {
                drop(site);
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set, but the test's network namespace could not be made: {err}"
                );
                println!("SKIPPED: a network namespace could not be made here ({err})");
                None
            }
        }
    }

    /// Makes the namespace and the link; says how the link is shaped.
    fn build(&self) -> Result<&'static str, String> {
        let inner = format!("tice{}", std::process::id() % 100_000);
        let (ns, outer) = (self.netns.as_str(), self.outer.as_str());
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", outer, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &inner, "netns", ns])?;
        ip(&["addr", "add", &format!("{}/30", self.core), "dev", outer])?;
        ip(&["link", "set", outer, "up"])?;
        let edge = format!("{}/30", self.edge);
        ip(&[
            "netns", "exec", ns, "ip", "addr", "add", &edge, "dev", &inner,
        ])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", &inner, "up"])?;
        ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        let netem = ["netem", "rate", "100mbit", "delay", "20ms"];
        let tbf = [
            "tbf", "rate", "100mbit", "burst", "128kb", "latency", "100ms",
        ];
        let mut shaping = "netem: 100 Mbit/s, 20 ms each way";
        for (device, netns) in [(outer, None), (inner.as_str(), Some(ns))] {
            let qdisc = |kind: &[&str]| {
                let mut args = vec!["qdisc", "add", "dev", device, "root"];
                args.extend_from_slice(kind);
                match netns {
                    Some(ns) => {
                        let mut inside = vec!["netns", "exec", ns, "tc"];
                        inside.extend(args);
                        ip(&inside)
                    }
                    None => run("tc", &args),
                }
            };
            if qdisc(&netem).is_err() {
                // This kernel has no sch_netem: the rate alone.
                qdisc(&tbf)?;
                shaping = "tbf: 100 Mbit/s (no netem in this kernel, so no delay)";
            }
        }
        Ok(shaping)
    }

    /// Bytes sent across the link into the edge site, and out of it, so far.
    fn crossed(&self) -> (u64, u64) {
        let counter = |name: &str| {
            let path = format!("/sys/class/net/{}/statistics/{name}", self.outer);
            std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        (counter("tx_bytes"), counter("rx_bytes"))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // The namespace takes its veth end along, and the pair goes with it.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.outer]);
    }
}

/// Downloads `id` through `node` with the admin token: the body.
async fn download(node: &Node, id: &str) -> Bytes {
    let client = reqwest::Client::new();
    let url = format!("{}/v2/images/{id}/file", node.url);
    let response = get_as(&client, &url, ADMIN).await;
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.unwrap()
}

/// The upstream's reads of `id`'s data (the access checks' one-byte probes aside).
fn reads_of(upstream: &RawUpstream, id: &str) -> usize {
    let path = format!("/v2/images/{id}/file");
    let downloads = upstream.downloads();
    downloads.iter().filter(|seen| seen.path == path).count()
}

async fn metrics(node: &Node) -> String {
    let response = reqwest::get(format!("{}/metrics", node.url)).await.unwrap();
    response.text().await.unwrap()
}

/// Asserts that `crossed` bytes are one copy of the image (with the headers, the access
/// checks and the database's traffic beside it), not two.
fn one_copy(crossed: u64, what: &str) {
    let size = SIZE as u64;
    assert!(
        crossed >= size && crossed < size + size / 4,
        "{what}: {crossed} bytes crossed the link for an image of {size}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_site_reads_each_image_across_its_thin_link_once() {
    let Some(site) = Site::up() else {
        return;
    };
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    println!("the link: {}", site.shaping);
    // The core site: the upstream, the database (through a relay on the link's address) and
    // one node. The edge site: two nodes in the namespace.
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start_on(site.core, data.clone(), Mode::Polite).await;
    let relay = DbProxy::start_on(site.core, Server::Postgres).await;
    let across = db
        .url_via(relay.port)
        .replace("127.0.0.1", &site.core.to_string());
    let work = tempfile::tempdir().unwrap();
    let (core_host, edge_host) = (site.core.to_string(), site.edge.to_string());
    let node = |name: &str, host: &Host<'_>, database: &str, zone: &str| {
        let lines = format!("peer_token = {PEER_TOKEN}\npeer_zone = {zone}\n");
        let dir = work.path().join(name);
        start_node_on(host, &dir, &upstream.url(), database, ("", &lines))
    };
    let core = node(
        "core",
        &Host {
            address: &core_host,
            netns: None,
        },
        &db.url,
        "core",
    );
    let on_edge = Host {
        address: &edge_host,
        netns: Some(&site.netns),
    };
    let edge1 = node("edge1", &on_edge, &across, "edge");
    let edge2 = node("edge2", &on_edge, &across, "edge");
    let zones = "SELECT COUNT(*) FROM tower_image_cache_node_zones";
    assert_eq!(
        db.wait_count(zones, 3).await,
        3,
        "every node recorded its zone"
    );

    // One after another: the core node reads the upstream, the first edge node reads the core
    // node's copy across the link, and the second reads the first's, not the core's (whose
    // URL sorts first: without zones, it would cross the link again).
    assert_eq!(download(&core, "seq").await, data);
    db.wait_for_rows(vec![(core.url.clone(), "seq".into(), 0, SIZE as i64)])
        .await;
    let before = site.crossed();
    for edge in [&edge1, &edge2] {
        assert_eq!(download(edge, "seq").await, data);
        wait_listed(&edge.url, ADMIN, "seq", Duration::from_secs(15), "").await;
        assert_eq!(std::fs::read(edge.dir.join("seq")).unwrap(), data);
        let mut rows = db.rows().await;
        rows.retain(|row| row.0 == edge.url);
        for _ in 0..300 {
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            rows = db.rows().await;
            rows.retain(|row| row.0 == edge.url);
        }
        assert_eq!(rows.len(), 1, "{}'s row reached the table", edge.url);
    }
    let after = site.crossed();
    one_copy(after.0 - before.0, "one after another, into the edge site");
    assert_eq!(reads_of(&upstream, "seq"), 1);
    let second = metrics(&edge2).await;
    assert_eq!(
        metric(&second, "image_cache_bytes_total{source=\"peer\"}"),
        SIZE as u64,
        "the second edge node read its zone's copy:\n{second}"
    );

    // All at once, two clients on each edge node: one of them reads the image into the site
    // (here from the upstream, for the fleet), the other follows it inside the site.
    let before = site.crossed();
    let mut clients = Vec::new();
    for edge in [&edge1, &edge2, &edge1, &edge2] {
        let url = edge.url.clone();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let response = get_as(&client, &format!("{url}/v2/images/cold/file"), ADMIN).await;
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }));
    }
    for client in clients {
        assert_eq!(
            client.await.unwrap(),
            data,
            "every client got the whole image"
        );
    }
    for edge in [&edge1, &edge2] {
        wait_listed(&edge.url, ADMIN, "cold", Duration::from_secs(15), "").await;
        assert_eq!(std::fs::read(edge.dir.join("cold")).unwrap(), data);
    }
    let after = site.crossed();
    one_copy(after.0 - before.0, "all at once, into the edge site");
    assert_eq!(reads_of(&upstream, "cold"), 1);
    // Where the edge nodes' four fills came from: the core's copy and the first edge node's
    // (one after another), the upstream and the reading edge node's fill (all at once).
    let mut sources = [0; 3];
    for edge in [&edge1, &edge2] {
        let text = metrics(edge).await;
        for (count, source) in sources.iter_mut().zip(["upstream", "peer", "follow"]) {
            let name = format!("image_cache_fill_sources_total{{source=\"{source}\"}}");
            *count += metric(&text, &name);
        }
    }
    assert_eq!(
        sources,
        [1, 2, 1],
        "fills by source: upstream, peer, follow"
    );
    drop((core, edge1, edge2));
}

/// An edge tier whose upstream is a node of a regional tier (each tier a fleet of its own):
/// the edge nodes' misses are the regional node's, which reads the backend once and answers the
/// second edge node from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_tier_in_front_of_a_regional_tier_reads_the_backend_once() {
    let (Some(regional_db), Some(edge_db)) = (
        TestDb::create(Server::Postgres).await,
        TestDb::create(Server::Postgres).await,
    ) else {
        return;
    };
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let work = tempfile::tempdir().unwrap();
    let regional = nodes::start_node(
        &work.path().join("regional"),
        &upstream.url(),
        &regional_db.url,
        "",
    );
    let edges = ["edge1", "edge2"]
        .map(|name| nodes::start_node(&work.path().join(name), &regional.url, &edge_db.url, ""));

    for edge in &edges {
        assert_eq!(download(edge, "tiered").await, data);
        wait_listed(&edge.url, ADMIN, "tiered", Duration::from_secs(15), "").await;
        assert_eq!(std::fs::read(edge.dir.join("tiered")).unwrap(), data);
    }
    assert_eq!(
        reads_of(&upstream, "tiered"),
        1,
        "the backend was read once"
    );
    assert_eq!(
        std::fs::read(regional.dir.join("tiered")).unwrap(),
        data,
        "the regional tier keeps its copy"
    );
    let counted = metrics(&regional).await;
    // The edge nodes' access checks ask the regional node too (one-byte probes), so its
    // bytes tell the story: the image read from the backend once, and sent to both edge
    // nodes (as it was filled, then from its cache).
    let bytes = |source: &str| {
        let name = format!("image_cache_bytes_total{{source=\"{source}\"}}");
        metric(&counted, &name)
    };
    assert_eq!(bytes("upstream"), SIZE as u64, "{counted}");
    assert!(
        bytes("cache") >= 2 * SIZE as u64 && bytes("cache") < 3 * SIZE as u64,
        "{counted}"
    );
    // Each tier's fleet lists its own nodes' copies (the regional one with its hits: the
    // second edge node's download, and its probe when that lands as a hit too).
    let mut regional_rows = Vec::new();
    for _ in 0..300 {
        regional_rows = regional_db.rows().await;
        if regional_rows.len() == 1 && regional_rows[0].2 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (url, id, hits, size) = regional_rows[0].clone();
    assert_eq!(
        (url, id, size),
        (regional.url.clone(), "tiered".into(), SIZE as i64)
    );
    assert!(hits >= 1, "{regional_rows:?}");
    let mut rows: Vec<_> = edges
        .iter()
        .map(|edge| (edge.url.clone(), "tiered".to_owned(), 0, SIZE as i64))
        .collect();
    rows.sort();
    edge_db.wait_for_rows(rows).await;
}
