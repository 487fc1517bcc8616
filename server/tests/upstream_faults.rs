//! The cache server in front of an upstream that misbehaves on a real socket: it never
//! answers, stalls after the head, cuts the body (and answers the ranged request right, with
//! `200`, or with wrong bytes). What each client, the disk, the log and the metrics show.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::example::{start_logged, Server};
use common::raw_upstream::{Mode, RawUpstream};
use common::{image_data, listing, metric};

const SIZE: usize = 3 * 1024 * 1024;

/// A node's log, as `start_logged` gathers it.
type Log = Arc<Mutex<String>>;

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("x-auth-token", "admin-secret")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
}

async fn metrics(node: &str) -> String {
    reqwest::get(format!("{node}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const FAST: &str = "upstream_response_timeout = 1\nupstream_idle_timeout = 1\n";

/// A node in front of a raw upstream serving `data` as `mode`, with the quick resume settings:
/// the upstream and the directory (kept while the test runs), the cache's directory, the node
/// and its log.
async fn fast_node(
    data: Bytes,
    mode: Mode,
) -> (RawUpstream, tempfile::TempDir, PathBuf, Server, Log) {
    let upstream = RawUpstream::start(data, mode).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);
    (upstream, dir, cache, node, log)
}

/// Two readers each get the whole image, and the fill is committed.
async fn two_readers_get_it_and_it_is_committed(node: &str, cache: &Path, data: &Bytes) {
    two_readers_get_the_whole_image(node, data).await;
    wait_for("the commit", || cache.join("img").exists()).await;
}

/// Asserts that the metric line starting with `line` (labels included) reads `expected`.
fn assert_counted(text: &str, line: &str, expected: u64) {
    assert_eq!(metric(text, line), expected, "{line} in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gets_a_504_the_log_and_the_metric_name() {
    let (upstream, _dir, cache, node, log) = fast_node(image_data(SIZE), Mode::Hang).await;

    let started = Instant::now();
    let response = get(&format!("{}/v2/images/img/file", node.url)).await;
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The access check's probe of the download timed out first: Glance's error format, and
    // when to try again.
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "504 Gateway Timeout", "{body}");

    let text = metrics(&node.url).await;
    assert_eq!(
        metric(
            &text,
            "image_cache_upstream_timeouts_total{phase=\"response\"}"
        ),
        1,
        "{text}"
    );
    wait_for("the log line", || {
        log.lock().unwrap().contains("timed out; answering 504")
    })
    .await;
    let log = log.lock().unwrap().clone();
    let line = log
        .lines()
        .find(|l| l.contains("timed out; answering 504"))
        .unwrap();
    assert!(line.contains(&upstream.url()), "{line}");
    assert!(line.contains("phase=\"response\""), "{line}");
    assert!(line.contains("limit_seconds=1"), "{line}");
    // Nothing was cached, nothing half-written is left.
    assert!(!cache.join("img").exists());
    assert!(listing(&cache.join("incomplete")).is_empty());
}

/// One client starts the fill, a second follows it from the growing file: both must read the
/// whole image, which is then cached.
async fn two_readers_get_the_whole_image(node: &str, data: &[u8]) {
    let url = format!("{node}/v2/images/img/file");
    let first = get(&url).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    let follower = tokio::spawn(async move { get(&url).await.bytes().await });
    assert_eq!(
        first.bytes().await.expect("the client never sees the cut"),
        data
    );
    assert_eq!(
        follower
            .await
            .unwrap()
            .expect("the follower never sees the cut"),
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_at_40_percent_is_resumed_with_range_and_cached() {
    let data = image_data(SIZE);
    let (upstream, _dir, cache, node, log) = fast_node(data.clone(), Mode::CutAt40).await;

    two_readers_get_it_and_it_is_committed(&node.url, &cache, &data).await;
    assert_eq!(std::fs::read(cache.join("img")).unwrap(), data);
    let downloads = upstream.downloads();
    let ranged: Vec<_> = downloads.iter().filter_map(|d| d.header("range")).collect();
    assert_eq!(
        ranged,
        [format!("bytes={}-", SIZE * 2 / 5)],
        "{downloads:?}"
    );
    // The ranged request carries the caller's identity, as the first one did.
    assert!(downloads
        .iter()
        .all(|d| d.header("x-auth-token") == Some("admin-secret")));
    let text = metrics(&node.url).await;
    assert_counted(
        &text,
        "image_cache_fill_resumes_total{answer=\"partial\"}",
        1,
    );
    wait_for("the resume's log line", || {
        log.lock()
            .unwrap()
            .contains("asking again from the byte reached")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_then_a_stall_are_resumed_after_the_idle_limit() {
    let data = image_data(SIZE);
    let (_upstream, _dir, cache, node, log) = fast_node(data.clone(), Mode::StallAt40).await;

    two_readers_get_it_and_it_is_committed(&node.url, &cache, &data).await;
    let text = metrics(&node.url).await;
    assert_counted(
        &text,
        "image_cache_upstream_timeouts_total{phase=\"idle\"}",
        1,
    );
    assert_counted(
        &text,
        "image_cache_fill_resumes_total{answer=\"partial\"}",
        1,
    );
    wait_for("the idle timeout's log line", || {
        log.lock().unwrap().contains("phase=\"idle\"")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_200_to_the_range_is_read_from_byte_n() {
    let data = image_data(SIZE);
    let (_upstream, _dir, cache, node, _log) =
        fast_node(data.clone(), Mode::CutIgnoringRange).await;

    two_readers_get_it_and_it_is_committed(&node.url, &cache, &data).await;
    assert_eq!(std::fs::read(cache.join("img")).unwrap(), data);
    let text = metrics(&node.url).await;
    assert_counted(&text, "image_cache_fill_resumes_total{answer=\"whole\"}", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_bytes_that_do_not_verify_fail_every_client_and_commit_nothing() {
    let data = image_data(SIZE);
    let (upstream, _dir, cache, node, _log) = fast_node(data.clone(), Mode::CutWrongBytes).await;

    let url = format!("{}/v2/images/img/file", node.url);
    let first = get(&url).await;
    assert_eq!(first.status(), 200);
    let follower = {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await.bytes().await })
    };
    assert!(
        first.bytes().await.is_err(),
        "a wrong image must not look whole"
    );
    assert!(follower.await.unwrap().is_err(), "nor to a follower");
    wait_for("the failed fill in invalid/", || {
        cache.join("invalid/img").exists()
    })
    .await;
    assert!(!cache.join("img").exists());
    assert!(listing(&cache.join("incomplete")).is_empty());
    let text = metrics(&node.url).await;
    assert!(
        text.contains("image_cache_fills_total{outcome=\"failed\""),
        "{text}"
    );
    // The next request starts a new fill (nothing wrong was kept).
    upstream.set_mode(Mode::Polite);
    let again = get(&url).await;
    assert_eq!(again.headers()["x-cache-status"], "MISS");
    assert_eq!(again.bytes().await.unwrap(), data);
}

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs, so
/// a connection to it neither succeeds nor fails (an upstream host that went dark).
fn dark_listener() -> (std::net::TcpListener, Vec<std::net::TcpStream>, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket, bound and listened on with libc, then owned by a TcpListener.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let bound = libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(bound, 0);
        assert_eq!(libc::listen(fd, 0), 0);
        std::net::TcpListener::from_raw_fd(fd)
    };
    let port = listener.local_addr().unwrap().port();
    // Fill the queue (backlog 0 holds one) so that the next SYN goes unanswered.
    let mut held = Vec::new();
    for _ in 0..4 {
        let attempt = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        );
        match attempt {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    (listener, held, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_cannot_be_connected_to_gets_a_504_at_the_connect_timeout() {
    let (_listener, _held, port) = dark_listener();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let upstream = format!("http://127.0.0.1:{port}");
    let (node, log) = start_logged(&upstream, &cache, "upstream_connect_timeout = 1\n", "", &[]);

    let started = Instant::now();
    let response = get(&format!("{}/v2/images", node.url)).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("could not be connected to within 1 s"),
        "{message}"
    );
    let text = metrics(&node.url).await;
    assert_eq!(
        metric(
            &text,
            "image_cache_upstream_timeouts_total{phase=\"connect\"}"
        ),
        1,
        "{text}"
    );
    wait_for("the log line", || {
        log.lock().unwrap().contains("phase=\"connect\"")
    })
    .await;
}
