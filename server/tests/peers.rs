//! Fills from the fleet's own nodes (`[cache_server] peer_token`), with real `image-cache-server`
//! processes on the real PostgreSQL and MariaDB, in front of an upstream on a raw socket that
//! counts its reads: a second node reads the image from the first, not from the upstream; a
//! dead peer or a rotten copy costs the client nothing it could mistake for the image; the
//! peer route admits the fleet's token only.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/db.rs"]
#[allow(dead_code)] // the helpers of the library's central tests too
mod db;
mod nodes;
#[path = "../../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::example::{get_as, start_logged, wait_listed};
use common::metric;
use common::raw_upstream::{Mode, RawUpstream};
use db::{on_servers, Server, TestDb};
use nodes::{peer_node, start_node_with, Node, ADMIN, PEER_TOKEN};
use proxy::DbProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZE: usize = 3 * 1024 * 1024 + 17;

/// Two nodes of a fleet on a database of their own, in front of an upstream serving `data`.
struct Pair {
    db: TestDb,
    _work: tempfile::TempDir,
    data: Bytes,
    upstream: RawUpstream,
    one: Node,
    two: Node,
}

impl Pair {
    /// The first node reads the image (from the upstream), and its row reaches the table.
    async fn first_holds_it(&self) {
        assert_eq!(download(&self.one, "img1").await.1.unwrap(), self.data);
        let row = (self.one.url.clone(), "img1".into(), 0, SIZE as i64);
        self.db.wait_for_rows(vec![row]).await;
    }
}

/// Two peer nodes on `server`, in front of an upstream answering as `mode`; `None` (after
/// printing why) where the database server is missing and `CI` is not set.
async fn two_nodes(server: Server, mode: Mode) -> Option<Pair> {
    let db = TestDb::create(server).await?;
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), mode).await;
    let one = peer_node(work.path(), "1", &upstream, &db);
    let two = peer_node(work.path(), "2", &upstream, &db);
    Some(Pair {
        db,
        _work: work,
        data,
        upstream,
        one,
        two,
    })
}

/// Downloads `id` through `node`: its `X-Cache-Status` and body (or the body's error).
async fn download(node: &Node, id: &str) -> (String, Result<Bytes, String>) {
    let client = reqwest::Client::new();
    let url = format!("{}/v2/images/{id}/file", node.url);
    let response = get_as(&client, &url, ADMIN).await;
    assert_eq!(response.status(), 200);
    let status = response.headers()["x-cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, response.bytes().await.map_err(|e| e.to_string()))
}

/// The node's `/metrics` text.
async fn metrics(node: &Node) -> String {
    let response = reqwest::get(format!("{}/metrics", node.url)).await.unwrap();
    response.text().await.unwrap()
}

/// The upstream's reads of the image's data (the access checks' one-byte probes aside).
fn upstream_reads(upstream: &RawUpstream) -> usize {
    upstream.downloads().len()
}

async fn a_second_node_reads_the_first_not_the_upstream(server: Server) {
    let Some(Pair {
        db,
        data,
        upstream,
        one,
        two,
        _work,
    }) = two_nodes(server, Mode::Polite).await
    else {
        return;
    };

    let (status, body) = download(&one, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&one.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    db.wait_for_rows(vec![(one.url.clone(), "img1".into(), 0, SIZE as i64)])
        .await;
    assert_eq!(upstream_reads(&upstream), 1);

    let (status, body) = download(&two, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(
        upstream_reads(&upstream),
        1,
        "the second node read the first one's copy, not the upstream"
    );
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), data);
    let counted = metrics(&two).await;
    assert_eq!(
        metric(&counted, "image_cache_fill_sources_total{source=\"peer\"}"),
        1
    );
    assert_eq!(
        metric(
            &counted,
            "image_cache_fill_sources_total{source=\"upstream\"}"
        ),
        0
    );
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"peer\"}"),
        SIZE as u64
    );
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"upstream\"}"),
        0
    );
    // Both hold it now; a hit on the second is its own.
    let (status, body) = download(&two, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("HIT", data));
}

on_servers!(a_second_node_reads_the_first_not_the_upstream {
    Postgres => a_second_node_reads_the_first_not_the_upstream_on_postgresql,
    MariaDb => a_second_node_reads_the_first_not_the_upstream_on_mariadb,
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_leaves_the_fill_to_the_upstream() {
    let Some(fleet) = two_nodes(Server::Postgres, Mode::Polite).await else {
        return;
    };
    fleet.first_holds_it().await;
    let (data, upstream, two) = (&fleet.data, &fleet.upstream, &fleet.two);
    // Killed: its row stays in the fleet's table, naming a node that no longer answers.
    drop(fleet.one);

    let (status, body) = download(two, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(upstream_reads(upstream), 2, "the fill went to the upstream");
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), *data);
    assert_eq!(
        peer_failures(two).await,
        [1, 0, 0, 0, 0],
        "one unreachable peer"
    );
}

/// The `fill_source` of the access line of `node`'s miss of `id` (waiting for it a while).
async fn fill_source_logged(node: &Node, id: &str) -> String {
    logged_field(node, id, "fill_source").await
}

/// The field `name` of the access line of `node`'s miss of `id` (waiting for it a while).
async fn logged_field(node: &Node, id: &str, name: &str) -> String {
    let log = node.dir.parent().unwrap().join("node.log");
    let path = format!("path=/v2/images/{id}/file");
    let field = format!("{name}=\"");
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let line = text.lines().find(|line| {
            line.contains("tower_image_cache::access")
                && line.contains(&path)
                && line.contains("MISS")
        });
        if let Some(value) = line.and_then(|l| l.split(field.as_str()).nth(1)) {
            return value.split('"').next().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no access line with {name} for {id} in {}", log.display());
}

/// `image_cache_peer_failures_total` of `node` by reason: unreachable, refused, cut,
/// unverified, slow.
async fn peer_failures(node: &Node) -> [u64; 5] {
    let counted = metrics(node).await;
    ["unreachable", "refused", "cut", "unverified", "slow"].map(|reason| {
        let name = format!("image_cache_peer_failures_total{{reason=\"{reason}\"}}");
        metric(&counted, &name)
    })
}

/// Waits until `path` is gone; whether it went.
async fn gone(path: &std::path::Path) -> bool {
    for _ in 0..100 {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The peer checks each block of its copy against the CRC-32 its fill recorded before sending
/// it: a block that rotted on its disk is never sent, the peer removes its copy, and the node
/// reading it goes on from that block's first byte with the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_rotten_block_is_never_sent_and_the_rest_comes_from_the_upstream() {
    use std::os::unix::fs::FileExt;
    let Some(fleet) = two_nodes(Server::Postgres, Mode::Polite).await else {
        return;
    };
    fleet.first_holds_it().await;
    let (data, upstream, two) = (&fleet.data, &fleet.upstream, &fleet.two);
    // One byte of the second mebibyte of the first node's copy rots on its disk (the file,
    // its length and its attributes stay).
    let file = fleet.one.dir.join("img1");
    let at = SIZE / 2;
    let disk = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    disk.write_all_at(&[data[at] ^ 0xff], at as u64).unwrap();
    drop(disk);

    let (status, body) = download(two, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), *data);
    let reads = upstream.downloads();
    assert_eq!(reads.len(), 2, "the first fill, then the rest: {reads:?}");
    let range = reads[1].header("range").unwrap_or_default();
    assert_eq!(range, "bytes=1048576-", "resumed from the rotten block");
    assert_eq!(peer_failures(two).await, [0, 0, 1, 0, 0], "the peer cut");
    let counted = metrics(two).await;
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"peer\"}"),
        1024 * 1024,
        "the sound block before it came from the peer"
    );
    assert!(gone(&file).await, "the peer removed its rotten copy");
    assert_eq!(fill_source_logged(two, "img1").await, "peer");
    assert_eq!(
        logged_field(two, "img1", "resumed").await,
        "upstream@1048576"
    );
    assert!(
        !two.dir.join("invalid/img1").exists(),
        "nothing failed here"
    );
    let row = (two.url.clone(), "img1".into(), 0, SIZE as i64);
    fleet.db.wait_for_rows(vec![row]).await;
    let log = std::fs::read_to_string(fleet.one.dir.parent().unwrap().join("node.log"));
    assert!(
        log.unwrap().contains("rotten on disk"),
        "the peer logged why its copy went"
    );
}

/// A copy that has no block sums (replaced on the disk wholesale) is caught by the reading
/// node's digest at the end instead: never committed there, and reported to the peer, which
/// checks it against its checksum and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_altered_copy_without_sums_is_detected_reported_and_never_committed() {
    let Some(fleet) = two_nodes(Server::Postgres, Mode::Polite).await else {
        return;
    };
    fleet.first_holds_it().await;
    let (upstream, two) = (&fleet.upstream, &fleet.two);
    // The first node's copy is replaced by another file of the same length, one byte changed.
    let file = fleet.one.dir.join("img1");
    let mut rotten = std::fs::read(&file).unwrap();
    rotten[SIZE / 2] ^= 0xff;
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, &rotten).unwrap();

    let (status, body) = download(two, "img1").await;
    assert_eq!(status, "MISS");
    assert!(
        body.is_err(),
        "bytes that do not verify never arrive as a whole image"
    );
    let invalid = two.dir.join("invalid/img1");
    for _ in 0..100 {
        if invalid.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        invalid.exists(),
        "the unverified fill is kept for the cleaner"
    );
    assert!(!two.dir.join("img1").exists(), "nothing is committed");
    assert_eq!(upstream_reads(upstream), 1);

    // Asked again, the node leaves that peer alone and reads the upstream.
    let (status, body) = download(two, "img1").await;
    assert_eq!(
        (status.as_str(), body.unwrap()),
        ("MISS", fleet.data.clone())
    );
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), fleet.data);
    assert_eq!(upstream_reads(upstream), 2);
    assert_eq!(
        peer_failures(two).await,
        [0, 0, 0, 1, 0],
        "one unverified copy"
    );
    // The peer was told: it checked its copy against the checksum it recorded, and removed it
    // (file and row), so no other node reads it.
    assert!(gone(&file).await, "the rotten copy left the peer's disk");
    let row = (two.url.clone(), "img1".into(), 0, SIZE as i64);
    fleet.db.wait_for_rows(vec![row]).await;
}

async fn three_nodes_asked_at_once_read_the_upstream_once(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Slow).await;
    let nodes: Vec<Node> = ["1", "2", "3"]
        .into_iter()
        .map(|name| peer_node(work.path(), name, &upstream, &db))
        .collect();
    let readers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let url = format!("{}/v2/images/img1/file", node.url);
            tokio::spawn(async move {
                let response = get_as(&reqwest::Client::new(), &url, ADMIN).await;
                response.bytes().await.map_err(|e| e.to_string())
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), data);
    }
    for node in &nodes {
        wait_listed(&node.url, ADMIN, "img1", Duration::from_secs(10), "").await;
        assert_eq!(std::fs::read(node.dir.join("img1")).unwrap(), data);
    }
    assert_eq!(upstream_reads(&upstream), 1, "one read for the fleet");
    let mut sources = Vec::new();
    for node in &nodes {
        let counted = metrics(node).await;
        let source = |name: &str| {
            metric(
                &counted,
                &format!("image_cache_fill_sources_total{{source=\"{name}\"}}"),
            )
        };
        sources.push((source("upstream"), source("follow")));
    }
    sources.sort();
    assert_eq!(
        sources,
        [(0, 1), (0, 1), (1, 0)],
        "one node read the upstream, two followed it"
    );
    // The access lines say so too.
    let mut logged = Vec::new();
    for node in &nodes {
        logged.push(fill_source_logged(node, "img1").await);
    }
    logged.sort();
    assert_eq!(logged, ["follow", "follow", "upstream"]);
}

on_servers!(three_nodes_asked_at_once_read_the_upstream_once {
    Postgres => three_nodes_asked_at_once_read_the_upstream_once_on_postgresql,
    MariaDb => three_nodes_asked_at_once_read_the_upstream_once_on_mariadb,
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reading_node_dies_and_its_follower_goes_on_from_its_offset() {
    let Some(Pair {
        db: _db,
        data,
        upstream,
        mut one,
        two,
        _work,
    }) = two_nodes(Server::Postgres, Mode::Slow).await
    else {
        return;
    };
    let read = |node: &Node| {
        let url = format!("{}/v2/images/img1/file", node.url);
        tokio::spawn(async move {
            let response = get_as(&reqwest::Client::new(), &url, ADMIN).await;
            response.bytes().await.map_err(|e| e.to_string())
        })
    };
    let first = read(&one);
    // The first node reads the upstream (its fill claimed); the second follows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upstream_reads(&upstream) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first fill never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Any node names the one reading the image for the fleet.
    let nodes_url = format!("{}/v2/cache/nodes/img1", two.url);
    let nodes = get_as(&reqwest::Client::new(), &nodes_url, ADMIN).await;
    assert_eq!(nodes.status(), 200);
    assert_eq!(nodes.headers()["x-image-cache-filling"], one.url.as_str());
    assert_eq!(nodes.text().await.unwrap(), "[]", "no node holds it yet");
    let second = read(&two);
    tokio::time::sleep(Duration::from_millis(600)).await;
    one.child.kill().unwrap();
    one.child.wait().unwrap();
    assert!(
        first.await.unwrap().is_err(),
        "the dead node's client is cut"
    );

    assert_eq!(
        second.await.unwrap().unwrap(),
        data,
        "the follower's client lost nothing"
    );
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), data);
    let reads = upstream.downloads();
    assert_eq!(
        reads.len(),
        2,
        "the first fill, and the rest of the second: {reads:?}"
    );
    let range = reads[1].header("range").unwrap_or_default().to_owned();
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the follower resumed with a range: {reads:?}"));
    assert!(from > 0, "from its offset, not byte 0: {range}");
    let counted = metrics(&two).await;
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"follow\"}"),
        from
    );
}

/// A slow link of the test's own in front of a node: what it relays from the node trickles
/// (64 KiB every 40 ms), it counts the bytes, and it can be cut (as the node's death cuts its
/// connections: the kernel's buffers would otherwise deliver what the node had sent).
struct SlowLink {
    url: String,
    target: Arc<Mutex<Option<SocketAddr>>>,
    relayed: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
}

impl SlowLink {
    async fn start() -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let relayed: Arc<AtomicU64> = Arc::default();
        let cut: Arc<AtomicBool> = Arc::default();
        let (to, counted, cutting) = (target.clone(), relayed.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(addr) = *to.lock().unwrap() else {
                    continue;
                };
                let (counted, cutting) = (counted.clone(), cutting.clone());
                tokio::spawn(async move {
                    let Ok(node) = TcpStream::connect(addr).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_node, mut to_node) = node.into_split();
                    let requests = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_node).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_node.read(&mut buf).await {
                        if cutting.load(Ordering::SeqCst) {
                            break;
                        }
                        if n == 0 || to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counted.fetch_add(n as u64, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                    requests.abort();
                });
            }
        });
        SlowLink {
            url,
            target,
            relayed,
            cut,
        }
    }

    fn lead_to(&self, node: &Node) {
        let addr = node.url.trim_start_matches("http://").parse().unwrap();
        *self.target.lock().unwrap() = Some(addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_costs_the_client_nothing_and_the_rest_is_ranged() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    // The first node is known to the fleet by a slow link's address.
    let link = SlowLink::start().await;
    let advertised = format!("worker_self_reference_url = {}", link.url);
    let lines = format!("peer_token = {PEER_TOKEN}\n");
    let mut one = start_node_with(
        &work.path().join("1"),
        &upstream.url(),
        &db.url,
        &advertised,
        &lines,
    );
    link.lead_to(&one);
    let two = peer_node(work.path(), "2", &upstream, &db);
    assert_eq!(download(&one, "img1").await.1.unwrap(), data);
    db.wait_for_rows(vec![(link.url.clone(), "img1".into(), 0, SIZE as i64)])
        .await;

    let reading = tokio::spawn({
        let two_url = two.url.clone();
        async move {
            let client = reqwest::Client::new();
            let url = format!("{two_url}/v2/images/img1/file");
            let response = get_as(&client, &url, ADMIN).await;
            let status = response.headers()["x-cache-status"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, response.bytes().await.map_err(|e| e.to_string()))
        }
    });
    // A megabyte through, the first node dies (SIGKILL).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while link.relayed.load(Ordering::SeqCst) < 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the peer transfer never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.cut.store(true, Ordering::SeqCst);
    one.child.kill().unwrap();
    one.child.wait().unwrap();

    let (status, body) = reading.await.unwrap();
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&two.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(two.dir.join("img1")).unwrap(), data);
    let reads = upstream.downloads();
    assert_eq!(
        reads.len(),
        2,
        "the first node's fill, and the rest of the second's: {reads:?}"
    );
    let resumed_from: u64 = reads[1]
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the upstream was asked a ranged resume: {reads:?}"));
    assert!(
        resumed_from >= 1024 * 1024,
        "resumed from byte {resumed_from}"
    );
    // The bytes by where they came from: the peer's up to the cut, the upstream's after it.
    let counted = metrics(&two).await;
    let from_peer = metric(&counted, "image_cache_bytes_total{source=\"peer\"}");
    let from_upstream = metric(&counted, "image_cache_bytes_total{source=\"upstream\"}");
    assert_eq!(from_peer, resumed_from, "{counted}");
    assert_eq!(from_peer + from_upstream, SIZE as u64, "{counted}");
    assert_eq!(peer_failures(&two).await[2], 1, "the peer's body was cut");
    assert_eq!(
        metric(&counted, "image_cache_fill_sources_total{source=\"peer\"}"),
        1
    );
}

/// `GET /peer/v1/images/{id}` with `token` (and `range`): its status and body.
async fn ask_peer(node: &str, token: Option<&str>, range: Option<&str>) -> (u16, Bytes) {
    let mut request = reqwest::Client::new().get(format!("{node}/peer/v1/images/img1"));
    if let Some(token) = token {
        request = request.header("x-auth-token", token);
    }
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_route_admits_the_fleet_s_token_only() {
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let lines = format!("peer_token = {PEER_TOKEN}\n");
    let (node, _log) = start_logged(&upstream.url(), &dir.path().join("cache"), &lines, "", &[]);
    let url = node.url.clone();

    // Not held yet: the fleet's token learns that; nobody else learns anything.
    assert_eq!(ask_peer(&url, Some(PEER_TOKEN), None).await.0, 404);
    for (token, status) in [(None, 401), (Some("wrong"), 403), (Some(ADMIN), 403)] {
        assert_eq!(ask_peer(&url, token, None).await.0, status, "{token:?}");
    }
    let client = reqwest::Client::new();
    let response = get_as(&client, &format!("{url}/v2/images/img1/file"), ADMIN).await;
    assert_eq!(response.bytes().await.unwrap(), data);
    wait_listed(&url, ADMIN, "img1", Duration::from_secs(10), "").await;

    // Held: the same refusals for everyone but the fleet.
    for (token, status) in [(None, 401), (Some("wrong"), 403), (Some(ADMIN), 403)] {
        let (got, body) = ask_peer(&url, token, None).await;
        assert_eq!(got, status, "{token:?}");
        assert!(body.len() < 4096, "a refusal carries no image bytes");
    }
    assert_eq!(
        ask_peer(&url, Some(PEER_TOKEN), None).await,
        (200, data.clone())
    );
    let from = ask_peer(&url, Some(PEER_TOKEN), Some("bytes=1000-")).await;
    assert_eq!(from, (206, data.slice(1000..)));
    let other = ask_peer(&url, Some(PEER_TOKEN), Some("bytes=0-99")).await;
    assert_eq!(other.0, 400, "only a resume's open range");
    let beyond = format!("bytes={SIZE}-");
    let past = ask_peer(&url, Some(PEER_TOKEN), Some(&beyond)).await;
    assert_eq!(past.0, 416);
    // The report route admits the fleet alone too, and a report of a sound copy keeps it.
    let report = format!("{url}/peer/v1/images/img1/unverified");
    for (token, status) in [(None, 401), (Some("wrong"), 403), (Some(ADMIN), 403)] {
        let mut request = client.post(&report);
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        assert_eq!(request.send().await.unwrap().status(), status, "{token:?}");
    }
    let kept = client
        .post(&report)
        .header("x-auth-token", PEER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    let said = kept.text().await.unwrap();
    assert!(said.contains("matches its checksum; it is kept"), "{said}");
    assert!(dir.path().join("cache/img1").exists());
    // The upstream was read once, by the fill.
    assert_eq!(upstream_reads(&upstream), 1);
}

/// The fleet's database goes away: fills that would have asked a peer read the upstream
/// instead, every client gets the image, and once the database is back the rows written
/// meanwhile reach it.
async fn without_the_database_fills_go_to_the_upstream_and_rows_converge(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let relay = DbProxy::start(server).await;
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let lines = format!("peer_token = {PEER_TOKEN}\n");
    let through_relay = db.url_via(relay.port);
    let node = |name: &str| {
        start_node_with(
            &work.path().join(name),
            &upstream.url(),
            &through_relay,
            "",
            &lines,
        )
    };
    let (one, two) = (node("1"), node("2"));
    assert_eq!(download(&one, "img1").await.1.unwrap(), data);
    db.wait_for_rows(vec![(one.url.clone(), "img1".into(), 0, SIZE as i64)])
        .await;

    relay.cut();
    for id in ["img1", "img2"] {
        let (status, body) = download(&two, id).await;
        assert_eq!(
            (status.as_str(), body.unwrap()),
            ("MISS", data.clone()),
            "{id}"
        );
        wait_listed(&two.url, ADMIN, id, Duration::from_secs(10), "").await;
        assert_eq!(std::fs::read(two.dir.join(id)).unwrap(), data);
    }
    assert_eq!(upstream_reads(&upstream), 3, "both fills read the upstream");
    let counted = metrics(&two).await;
    assert_eq!(
        metric(
            &counted,
            "image_cache_fill_sources_total{source=\"upstream\"}"
        ),
        2,
        "{counted}"
    );
    assert_eq!(
        db.rows().await.len(),
        1,
        "nothing reached the database meanwhile"
    );

    relay.restore();
    let mut rows = vec![
        (one.url.clone(), "img1".to_owned(), 0, SIZE as i64),
        (two.url.clone(), "img1".to_owned(), 0, SIZE as i64),
        (two.url.clone(), "img2".to_owned(), 0, SIZE as i64),
    ];
    rows.sort();
    db.wait_for_rows(rows).await;
    // And with the database back, a third node fills from a peer again.
    let three = node("3");
    assert_eq!(download(&three, "img2").await.1.unwrap(), data);
    assert_eq!(upstream_reads(&upstream), 3, "the third node read a peer");
}

on_servers!(without_the_database_fills_go_to_the_upstream_and_rows_converge {
    Postgres => without_postgresql_fills_go_to_the_upstream_and_rows_converge,
    MariaDb => without_mariadb_fills_go_to_the_upstream_and_rows_converge,
});

/// How a fake peer of the test's own misbehaves.
#[derive(Clone, Copy)]
enum Misbehaving {
    /// Answers the whole image's head, sends its first MiB, and then nothing, holding the
    /// connection open.
    Stalls,
    /// Answers a resume (`Range: bytes=N-`) with `206` but the image from byte 0.
    IgnoresTheRange,
    /// Answers the whole image's head, sends its first MiB, and then 4 KiB every half second
    /// (8 KiB/s).
    Trickles,
}

/// A fake peer on `listener`, misbehaving as told; the `Range` headers it was asked with.
fn fake_peer(listener: TcpListener, data: Bytes, how: Misbehaving) -> (String, Asked) {
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let (data, seen) = (data.clone(), seen.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let range = head
                    .lines()
                    .find_map(|line| line.strip_prefix("range: "))
                    .map(str::to_owned);
                seen.lock().unwrap().push(range);
                let size = data.len();
                match how {
                    Misbehaving::Stalls => {
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                        socket.write_all(answer.as_bytes()).await.unwrap();
                        socket.write_all(&data[..1024 * 1024]).await.unwrap();
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Misbehaving::Trickles => {
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                        socket.write_all(answer.as_bytes()).await.unwrap();
                        socket.write_all(&data[..1024 * 1024]).await.unwrap();
                        for piece in data[1024 * 1024..].chunks(4096) {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if socket.write_all(piece).await.is_err() {
                                return;
                            }
                        }
                    }
                    Misbehaving::IgnoresTheRange => {
                        let answer = format!(
                            "HTTP/1.1 206 Partial Content\r\ncontent-length: {size}\r\n\
                             content-range: bytes 0-{}/{size}\r\n\r\n",
                            size - 1
                        );
                        socket.write_all(answer.as_bytes()).await.unwrap();
                        let _ = socket.write_all(&data).await;
                    }
                }
            });
        }
    });
    (url, asked)
}

/// The `Range` headers a fake peer was asked with.
type Asked = Arc<Mutex<Vec<Option<String>>>>;

/// A fleet node on `db` in front of `upstream` (`lines` added to its configuration; its log in
/// `node.log` beside its cache directory), and fake
/// peers misbehaving as `hows`, which the fleet's table names as holders of `img1` (`data`),
/// asked in that order.
async fn node_and_fake_holders(
    db: &TestDb,
    work: &std::path::Path,
    upstream: &RawUpstream,
    data: &Bytes,
    lines: &str,
    hows: &[Misbehaving],
) -> (Node, Vec<(String, Asked)>) {
    let lines = format!("peer_token = {PEER_TOKEN}\n{lines}");
    let log = format!("log_file = {}", work.join("node/node.log").display());
    let node = start_node_with(&work.join("node"), &upstream.url(), &db.url, &log, &lines);
    for _ in 0..200 {
        if db.nodes().await.contains(&node.url) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The holders are asked in their URLs' order.
    let mut listeners = Vec::new();
    for _ in hows {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    listeners.sort_by_key(|l| format!("http://{}", l.local_addr().unwrap()));
    let peers: Vec<_> = listeners
        .into_iter()
        .zip(hows)
        .map(|(listener, how)| fake_peer(listener, data.clone(), *how))
        .collect();
    for (url, _) in &peers {
        db.execute(&format!(
            "INSERT INTO node_reference (node_reference_url) VALUES ('{url}')"
        ))
        .await;
        db.execute(&format!(
            "INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits, \
             checksum, node_reference_id) SELECT 'img1', NOW(), NOW(), {}, 0, NULL, \
             node_reference_id FROM node_reference WHERE node_reference_url = '{url}'",
            data.len()
        ))
        .await;
    }
    (node, peers)
}

/// Two holders the fleet's table names misbehave: the first stalls mid-image, the second
/// answers the resume with bytes from the wrong offset. The client gets the whole image, the
/// rest comes from the upstream from the byte reached, and both peers are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_and_one_that_ignores_the_range_cost_the_client_nothing() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let hows = [Misbehaving::Stalls, Misbehaving::IgnoresTheRange];
    let lines = "upstream_idle_timeout = 1\n";
    let (node, peers) =
        node_and_fake_holders(&db, work.path(), &upstream, &data, lines, &hows).await;

    let (status, body) = download(&node, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    wait_listed(&node.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(node.dir.join("img1")).unwrap(), data);
    let reads = upstream.downloads();
    assert_eq!(reads.len(), 1, "only the rest was read upstream: {reads:?}");
    let range = reads[0].header("range").unwrap_or_default();
    assert_eq!(range, "bytes=1048576-", "resumed from the byte reached");
    let asked: Vec<_> = peers
        .iter()
        .map(|(_, asked)| asked.lock().unwrap().clone())
        .collect();
    assert_eq!(asked[0], [None], "the first peer was asked for the image");
    assert_eq!(
        asked[1],
        [Some("bytes=1048576-".to_owned())],
        "the second was asked to resume"
    );
    assert_eq!(
        peer_failures(&node).await,
        [0, 1, 1, 0, 0],
        "one refused, one cut"
    );
    let counted = metrics(&node).await;
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"peer\"}"),
        1024 * 1024
    );
}

/// A holder that keeps sending, but at 8 KiB/s, under the node's floor (`peer_min_rate`,
/// 1 MiB/s by default): after one window of it the node reads the rest from the upstream, from
/// the byte reached, and counts the peer as slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_slower_than_the_floor_is_left_for_the_upstream() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let hows = [Misbehaving::Trickles];
    let (node, peers) = node_and_fake_holders(&db, work.path(), &upstream, &data, "", &hows).await;

    let started = std::time::Instant::now();
    let (status, body) = download(&node, "img1").await;
    assert_eq!((status.as_str(), body.unwrap()), ("MISS", data.clone()));
    let took = started.elapsed();
    wait_listed(&node.url, ADMIN, "img1", Duration::from_secs(10), "").await;
    assert_eq!(std::fs::read(node.dir.join("img1")).unwrap(), data);
    assert!(
        took < Duration::from_secs(30),
        "the trickle was given up after a window, not followed to its end ({took:?})"
    );
    assert_eq!(peer_failures(&node).await, [0, 0, 0, 0, 1], "one slow peer");
    assert_eq!(*peers[0].1.lock().unwrap(), [None], "asked once");
    let from_peer = metric(
        &metrics(&node).await,
        "image_cache_bytes_total{source=\"peer\"}",
    );
    assert!(
        (1024 * 1024..SIZE as u64).contains(&from_peer),
        "the peer's first MiB and some of its trickle were kept: {from_peer}"
    );
    let reads = upstream.downloads();
    assert_eq!(reads.len(), 1, "only the rest was read upstream: {reads:?}");
    let range = reads[0].header("range").unwrap_or_default();
    assert_eq!(
        range,
        format!("bytes={from_peer}-"),
        "resumed from the byte reached"
    );
    let resumed = logged_field(&node, "img1", "resumed").await;
    assert_eq!(
        resumed,
        format!("upstream@{from_peer}"),
        "the access line says so"
    );
}
