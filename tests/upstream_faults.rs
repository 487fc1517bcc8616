//! The cache server in front of an upstream that misbehaves on a real socket: it never
//! answers, stalls after the head, cuts the body (and answers the ranged request right, with
//! `200`, or with wrong bytes). What each client, the disk, the log and the metrics show.
#![cfg(feature = "server")]

mod common;

use std::time::{Duration, Instant};

use common::example::start_logged;
use common::raw_upstream::{Mode, RawUpstream};
use common::{image_data, listing, metric};

const SIZE: usize = 3 * 1024 * 1024;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gets_a_504_the_log_and_the_metric_name() {
    let upstream = RawUpstream::start(image_data(SIZE), Mode::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);

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
    let upstream = RawUpstream::start(data.clone(), Mode::CutAt40).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);

    two_readers_get_the_whole_image(&node.url, &data).await;
    wait_for("the commit", || cache.join("img").exists()).await;
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
    assert_eq!(
        metric(&text, "image_cache_fill_resumes_total{answer=\"partial\"}"),
        1,
        "{text}"
    );
    assert!(log
        .lock()
        .unwrap()
        .contains("asking again from the byte reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_then_a_stall_are_resumed_after_the_idle_limit() {
    let data = image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::StallAt40).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);

    two_readers_get_the_whole_image(&node.url, &data).await;
    wait_for("the commit", || cache.join("img").exists()).await;
    let text = metrics(&node.url).await;
    assert_eq!(
        metric(&text, "image_cache_upstream_timeouts_total{phase=\"idle\"}"),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "image_cache_fill_resumes_total{answer=\"partial\"}"),
        1,
        "{text}"
    );
    let log = log.lock().unwrap().clone();
    assert!(log.contains("phase=\"idle\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_200_to_the_range_is_read_from_byte_n() {
    let data = image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::CutIgnoringRange).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, _log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);

    two_readers_get_the_whole_image(&node.url, &data).await;
    wait_for("the commit", || cache.join("img").exists()).await;
    assert_eq!(std::fs::read(cache.join("img")).unwrap(), data);
    let text = metrics(&node.url).await;
    assert_eq!(
        metric(&text, "image_cache_fill_resumes_total{answer=\"whole\"}"),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_bytes_that_do_not_verify_fail_every_client_and_commit_nothing() {
    let data = image_data(SIZE);
    let upstream = RawUpstream::start(data.clone(), Mode::CutWrongBytes).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (node, _log) = start_logged(&upstream.url(), &cache, FAST, "", &[]);

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
