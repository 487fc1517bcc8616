//! One upstream read for many concurrent misses, and fills that outlive their first client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::Semaphore;
use tower_image_cache::ImageId;

const CHUNK: usize = 64 * 1024;

fn id(s: &str) -> ImageId {
    ImageId::new(s).unwrap()
}

/// Lets the gated upstream stream slowly: `per_tick` chunks every few milliseconds.
fn trickle(gate: Arc<Semaphore>, per_tick: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            gate.add_permits(per_tick);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

async fn download(server: &TestServer, image: &str) -> Result<bytes::Bytes, reqwest::Error> {
    server.get(image, OWNER).await.bytes().await
}

type Download = tokio::task::JoinHandle<Result<bytes::Bytes, reqwest::Error>>;

/// A server whose 4 MiB image "img" streams `permits` chunks and then waits on the gate, and
/// the download that started its fill.
async fn gated_fill(permits: usize) -> (Arc<TestServer>, bytes::Bytes, Arc<Semaphore>, Download) {
    let server = Arc::new(TestServer::start().await);
    let data = image_data(4 * 1024 * 1024);
    let gate = Arc::new(Semaphore::new(permits));
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );
    let first = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { download(&server, "img").await })
    };
    (server, data, gate, first)
}

/// The bytes the fill in progress took so far.
fn bytes_taken(server: &TestServer) -> u64 {
    server
        .cache
        .fills_in_progress()
        .first()
        .map_or(0, |fill| fill.bytes_written)
}

/// `n` downloads of `image` at once, each its own task.
fn concurrently(
    server: &Arc<TestServer>,
    image: &'static str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<bytes::Bytes, reqwest::Error>>> {
    (0..n)
        .map(|_| {
            let server = Arc::clone(server);
            tokio::spawn(async move { download(&server, image).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_misses_read_the_source_once() {
    let server = Arc::new(TestServer::start().await);
    let gate = Arc::new(Semaphore::new(0));
    let data = image_data(8 * 1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );

    let downloads = concurrently(&server, "img", 32);
    let slow = trickle(gate, 2);
    for downloaded in downloads {
        assert_eq!(
            downloaded.await.unwrap().unwrap(),
            data,
            "every body whole and identical"
        );
    }
    slow.abort();
    assert_eq!(
        server.api.body_requests(),
        1,
        "one upstream read for 32 requests"
    );
    server.cache.idle().await;
    assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);

    // The metrics tell the same story: one miss that filled, 31 served from the cache.
    let metrics = server.cache.render_metrics().unwrap();
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
    };
    assert_eq!(value(r#"image_cache_responses_total{status="miss"}"#), 1);
    assert_eq!(value(r#"image_cache_responses_total{status="hit"}"#), 31);
    assert_eq!(value("image_cache_fills_started_total"), 1);
    assert!(value("image_cache_followers_total") >= 1, "{metrics}");
    assert_eq!(
        value(r#"image_cache_bytes_total{source="upstream"}"#),
        data.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_outlives_the_client_that_started_it() {
    let server = Arc::new(TestServer::start().await);
    let gate = Arc::new(Semaphore::new(1024 * 1024 / CHUNK + 1));
    let data = image_data(8 * 1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );

    let mut first = server.get("img", OWNER).await;
    let mut received = 0;
    while received < 1024 * 1024 {
        received += first.chunk().await.unwrap().unwrap().len();
    }
    let others = concurrently(&server, "img", 31);
    drop(first);
    let slow = trickle(gate, 4);
    for downloaded in others {
        assert_eq!(downloaded.await.unwrap().unwrap(), data);
    }
    slow.abort();
    server.cache.idle().await;
    assert!(
        server.cache.is_cached(&id("img")),
        "committed although its first client left"
    );
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_fails_every_body_and_commits_nothing() {
    let server = Arc::new(TestServer::start().await);
    let gate = Arc::new(Semaphore::new(0));
    let data = image_data(4 * 1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data).behavior(Behavior::GatedWrongChecksum(gate.clone())),
    );

    let downloads = concurrently(&server, "img", 32);
    let slow = trickle(gate, 2);
    for downloaded in downloads {
        assert!(
            downloaded.await.unwrap().is_err(),
            "no body may look complete"
        );
    }
    slow.abort();
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&id("img")));
    assert!(!server.cache_dir().join("img").exists());
}

/// The cache file is written a mebibyte at a time (direct I/O); a fill whose upstream pauses
/// puts what it has in the file, so its followers are not a block behind meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_what_a_paused_fill_has_while_its_upstream_pauses() {
    let (server, data, gate, first) = gated_fill(5).await; // 320 KiB, then the upstream pauses
    let taken = || bytes_taken(&server);
    eventually("the fill took the first 320 KiB", || {
        taken() >= 5 * CHUNK as u64
    })
    .await;

    let mut late = server.get("img", OWNER).await;
    assert_eq!(
        cache_status(&late),
        "HIT",
        "served from the fill in progress"
    );
    let mut got = Vec::new();
    let paused = tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 5 * CHUNK - 1 {
            got.extend_from_slice(&late.chunk().await.unwrap().expect("more bytes"));
        }
    })
    .await;
    assert!(
        paused.is_ok(),
        "the follower got {} bytes while the upstream paused",
        got.len()
    );
    assert_eq!(got, data[..got.len()]);
    assert_eq!(taken(), 5 * CHUNK as u64, "the upstream was still paused");

    gate.add_permits(1000);
    while let Some(chunk) = late.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, data);
    assert_eq!(first.await.unwrap().unwrap(), data);
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_joining_halfway_gets_the_whole_image_from_byte_zero() {
    let half = 4 * 1024 * 1024 / CHUNK / 2;
    let (server, data, gate, first) = gated_fill(half).await;
    let written = || bytes_taken(&server);
    eventually("half the image is written", || {
        written() >= (half * CHUNK) as u64
    })
    .await;

    let late = server.get("img", OWNER).await;
    assert_eq!(late.status(), 200);
    assert_eq!(
        cache_status(&late),
        "HIT",
        "served from the fill in progress"
    );
    assert_eq!(
        late.headers()["content-length"],
        data.len().to_string().as_str()
    );
    gate.add_permits(1000);
    assert_eq!(late.bytes().await.unwrap(), data);
    assert_eq!(first.await.unwrap().unwrap(), data);
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_off_a_fill_nobody_reads_stops_and_rolls_back() {
    use tower::Layer;
    use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let api = FakeApi::new();
    let gate = Arc::new(Semaphore::new(4));
    api.add(
        "img",
        FakeImage::private(image_data(4 * 1024 * 1024)).behavior(Behavior::Gated(gate.clone())),
    );
    let layer = CacheLayer::new(cache.clone(), InnerMetadata::new()).fill_without_client(false);
    let app = axum::Router::new().fallback_service(layer.layer(api.router()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut response = reqwest::Client::new()
        .get(format!("http://{addr}/v2/images/img/file"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap().unwrap();
    drop(response);
    gate.add_permits(1000);
    cache.idle().await;
    assert!(
        !cache.is_cached(&id("img")),
        "stopped when its only reader left"
    );
    assert!(!dir.path().join("img").exists());
    assert!(std::fs::read_dir(dir.path().join("incomplete"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn dropping_the_runtime_rolls_a_fill_back() {
    use tower::ServiceExt;
    use tower_image_cache::{CacheConfig, ImageCache};

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gate = Arc::new(Semaphore::new(2));
    // The service outlives the runtime: the rollback below is the runtime's doing.
    let _service = runtime.block_on(async {
        let service = gated_service(&cache, &gate);
        let response = service.clone().oneshot(owner_download()).await.unwrap();
        assert_eq!(response.headers()["x-cache-status"], "MISS");
        assert!(cache.is_filling(&id("img")));
        drop(response);
        service
    });
    drop(runtime);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.is_filling(&id("img")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fill never rolled back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert!(std::fs::read_dir(dir.path().join("incomplete"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_service_rolls_its_fills_back() {
    use tower::ServiceExt;
    use tower_image_cache::{CacheConfig, ImageCache};

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let gate = Arc::new(Semaphore::new(2));
    let service = gated_service(&cache, &gate);
    let response = service.clone().oneshot(owner_download()).await.unwrap();
    assert!(cache.is_filling(&id("img")));
    drop(service);
    gate.add_permits(1000);
    // The client's body ends with an error, not short and silent.
    assert!(http_body_util::BodyExt::collect(response.into_body())
        .await
        .is_err());
    cache.idle().await;
    assert!(!cache.is_cached(&id("img")));
    assert!(std::fs::read_dir(dir.path().join("incomplete"))
        .unwrap()
        .next()
        .is_none());
}

/// The cache layer, in process, around a fake API whose 4 MiB `img` streams a chunk per permit.
fn gated_service(
    cache: &tower_image_cache::ImageCache,
    gate: &Arc<Semaphore>,
) -> tower_image_cache::CacheService<axum::Router, tower_image_cache::InnerMetadata> {
    let api = FakeApi::new();
    api.add(
        "img",
        FakeImage::private(image_data(4 * 1024 * 1024)).behavior(Behavior::Gated(gate.clone())),
    );
    let layer =
        tower_image_cache::CacheLayer::new(cache.clone(), tower_image_cache::InnerMetadata::new());
    tower::Layer::layer(&layer, api.router())
}

fn owner_download() -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get("/v2/images/img/file")
        .header("x-auth-token", OWNER)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// A client that never reads does not stall the fill it started, nor the requests following
/// it: once someone follows, it is handed over to the file, and still gets every byte when it
/// finally reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_never_reads_holds_nobody_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start().await;
    let data = image_data(48 * 1024 * 1024);
    server.api.add("img", FakeImage::private(data.clone()));

    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /v2/images/img/file HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {OWNER}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    eventually("the stalled client leads a fill", || {
        server.cache.is_filling(&id("img"))
    })
    .await;

    let follower = tokio::time::timeout(Duration::from_secs(60), download(&server, "img"))
        .await
        .expect("a follower finishes while the leader reads nothing");
    assert_eq!(follower.unwrap(), data);
    server.cache.idle().await;
    assert!(server.cache.is_cached(&id("img")), "the fill committed");
    assert_eq!(server.api.body_requests(), 1);

    // The leader reads at last: every byte, from the relay and then from the file.
    let mut response = Vec::new();
    stalled.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    assert!(response[split..] == data[..], "the stalled client's bytes");
}

/// Deleting an image from the cache while it is filled stops the commit, not the downloads:
/// the client that started the fill and those following it all get every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_delete_during_a_fill_spares_every_download() {
    let server = Arc::new(TestServer::start().await);
    let data = image_data(4 * 1024 * 1024);
    let gate = Arc::new(Semaphore::new(8));
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );
    let downloads = concurrently(&server, "img", 8);
    eventually("the fill runs", || server.cache.is_filling(&id("img"))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.cache.delete_cached_image(&id("img")).unwrap());

    let slow = trickle(gate, 4);
    for downloaded in downloads {
        assert_eq!(downloaded.await.unwrap().unwrap(), data);
    }
    slow.abort();
    server.cache.idle().await;
    assert!(
        !server.cache.is_cached(&id("img")),
        "the delete stopped the commit"
    );
    assert_eq!(server.api.body_requests(), 1);
    assert!(listing(&server.cache_dir().join("incomplete")).is_empty());
}
