//! Fills whose upstream body is cut (an error, a stall past the idle limit) ask again with
//! `Range: bytes=N-` and go on from byte N: the client and every follower read the whole image
//! without a break. Answers that cannot continue the image commit nothing and fail every body.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tower_image_cache::{CacheConfig, ImageCache, ImageId, InnerMetadata};

const SIZE: usize = 2 * 1024 * 1024;

fn open(dir: &std::path::Path) -> ImageCache {
    ImageCache::open(CacheConfig::new(dir)).unwrap()
}

async fn server() -> TestServer {
    TestServer::start_with_layer(open, InnerMetadata::new(), |layer| {
        layer.upstream_idle_timeout(Some(Duration::from_millis(500)))
    })
    .await
}

/// Asserts that the metric line starting with `line` (labels included) reads `expected`.
fn assert_metric(server: &TestServer, line: &str, expected: u64) {
    let text = server.cache.render_metrics().unwrap();
    assert_eq!(metric(&text, line), expected, "{line} in {text}");
}

fn cached(server: &TestServer, image: &str) -> bool {
    server.cache.is_cached(&ImageId::new(image).unwrap())
}

/// A cache in front of an API sending `img` (`data`) with `behavior`, and what three readers
/// of it got, once the fill has ended.
async fn read_by_three(
    data: &bytes::Bytes,
    behavior: Behavior,
) -> (Arc<TestServer>, Vec<Result<bytes::Bytes, String>>) {
    let server = Arc::new(server().await);
    server
        .api
        .add("img", FakeImage::private(data.clone()).behavior(behavior));
    let bodies = three_readers(&server, "img").await;
    server.cache.idle().await;
    (server, bodies)
}

/// `image_cache_fill_resumes_total` for `answer`.
fn resumes(server: &TestServer, answer: &str) -> u64 {
    let text = server.cache.render_metrics().unwrap();
    metric(
        &text,
        &format!("image_cache_fill_resumes_total{{answer=\"{answer}\"}}"),
    )
}

/// The client that started the fill and two followers that joined it.
async fn three_readers(
    server: &Arc<TestServer>,
    image: &'static str,
) -> Vec<Result<bytes::Bytes, String>> {
    let first = server.get(image, OWNER).await;
    assert_eq!(first.status(), 200);
    assert_eq!(cache_status(&first), "MISS");
    let followers: Vec<_> = (0..2)
        .map(|_| {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                let response = server.get(image, OWNER).await;
                response.bytes().await.map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut all = vec![first.bytes().await.map_err(|e| e.to_string())];
    for follower in followers {
        all.push(follower.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_mid_body_is_resumed_with_range() {
    let data = image_data(SIZE);
    let (server, bodies) = read_by_three(&data, Behavior::FailMidStream).await;
    for body in bodies {
        assert_eq!(body.expect("no reader sees the cut"), data);
    }
    assert!(cached(&server, "img"));
    assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);
    assert_eq!(server.api.body_requests(), 2, "one read and one resume");
    assert_eq!(
        server
            .api
            .ranged_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(resumes(&server, "partial"), 1);
    assert_metric(&server, "image_cache_fills_total{outcome=\"committed\"}", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_and_its_resume_are_marked_and_nothing_else_is() {
    let data = image_data(SIZE);
    let (server, bodies) = read_by_three(&data, Behavior::FailMidStream).await;
    for body in bodies {
        assert_eq!(body.unwrap(), data);
    }
    // A range of an image not cached goes through as the caller's own request.
    server.api.add("other", FakeImage::private(data.clone()));
    let range = server
        .client
        .get(server.url("/v2/images/other/file"))
        .header("x-auth-token", OWNER)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    let downloads = server.api.downloads.lock().unwrap().clone();
    let marked: Vec<_> = downloads.iter().filter(|(_, marked)| *marked).collect();
    assert_eq!(marked.len(), 2, "the fill and its resume: {downloads:?}");
    assert_eq!(marked[0].0, None, "{downloads:?}");
    assert!(
        marked[1]
            .0
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-0"),
        "{downloads:?}"
    );
    let unmarked: Vec<_> = downloads.iter().filter(|(_, marked)| !marked).collect();
    assert!(
        unmarked
            .iter()
            .all(|(range, _)| matches!(range.as_deref(), Some("bytes=0-0") | Some("bytes=10-19"))),
        "only the access check's probes and the caller's range are unmarked: {downloads:?}"
    );
    assert!(unmarked
        .iter()
        .any(|(range, _)| range.as_deref() == Some("bytes=10-19")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_body_is_resumed_after_the_idle_limit() {
    let data = image_data(SIZE);
    let (server, bodies) = read_by_three(&data, Behavior::StallMidStream).await;
    for body in bodies {
        assert_eq!(body.expect("no reader sees the stall"), data);
    }
    assert!(cached(&server, "img"));
    assert_metric(
        &server,
        "image_cache_upstream_timeouts_total{phase=\"idle\"}",
        1,
    );
    assert_eq!(resumes(&server, "partial"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_200_to_the_range_is_read_from_byte_n() {
    let data = image_data(SIZE);
    let (server, bodies) = read_by_three(&data, Behavior::FailMidStreamIgnoringRange).await;
    for body in bodies {
        assert_eq!(body.expect("the skipped bytes are not sent twice"), data);
    }
    assert!(cached(&server, "img"));
    assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);
    assert_eq!(resumes(&server, "whole"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_with_the_wrong_content_range_fails_every_body_and_commits_nothing() {
    let (server, bodies) =
        read_by_three(&image_data(SIZE), Behavior::FailMidStreamWrongRange).await;
    for body in bodies {
        assert!(body.is_err(), "a body that cannot be continued must fail");
    }
    server.assert_not_committed("img");
    assert_eq!(resumes(&server, "refused"), 1);
    assert_eq!(
        server
            .api
            .ranged_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no second try"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_bytes_that_do_not_verify_fail_every_body_and_commit_nothing() {
    let (server, bodies) =
        read_by_three(&image_data(SIZE), Behavior::FailMidStreamWrongBytes).await;
    for body in bodies {
        assert!(body.is_err(), "unverified bytes must not look complete");
    }
    server.assert_not_committed("img");
    assert!(server.cache_dir().join("invalid/img").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_gives_up_after_its_resume_attempts() {
    let (server, bodies) = read_by_three(&image_data(SIZE), Behavior::FailMidStreamAlways).await;
    for body in bodies {
        assert!(body.is_err());
    }
    server.assert_not_committed("img");
    // The first read and three ranged requests, each cut again.
    assert_eq!(
        server
            .api
            .ranged_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(server.api.body_requests(), 4);
}

#[tokio::test]
async fn without_resume_attempts_a_cut_fails_the_fill() {
    let server = TestServer::start_with_layer(open, InnerMetadata::new(), |layer| {
        layer.upstream_resume_attempts(0)
    })
    .await;
    server.api.add(
        "img",
        FakeImage::private(image_data(SIZE)).behavior(Behavior::FailMidStream),
    );
    assert!(server.get("img", OWNER).await.bytes().await.is_err());
    server.cache.idle().await;
    server.assert_not_committed("img");
    assert_eq!(
        server
            .api
            .ranged_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_download_the_api_never_answers_gets_504_in_glance_s_format() {
    let server = TestServer::start_with_layer(open, InnerMetadata::new(), |layer| {
        layer.upstream_response_timeout(Some(Duration::from_millis(300)))
    })
    .await;
    server.api.add(
        "img",
        FakeImage::private(image_data(1000)).behavior(Behavior::Hang),
    );
    let started = std::time::Instant::now();
    let response = server
        .client
        .get(server.url("/v2/images/img/file"))
        .header("x-auth-token", OWNER)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(started.elapsed() < Duration::from_secs(10));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "504 Gateway Timeout", "{body}");
    // The access check's probe of the download is what timed out.
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot check access"),
        "{body}"
    );
    assert_metric(
        &server,
        "image_cache_upstream_timeouts_total{phase=\"response\"}",
        1,
    );
    server.cache.idle().await;
    server.assert_not_committed("img");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_beyond_max_concurrent_fills_are_served_through_uncached() {
    let server = Arc::new(
        TestServer::start_with_layer(open, InnerMetadata::new(), |layer| {
            layer.max_concurrent_fills(4)
        })
        .await,
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let images: Vec<(String, bytes::Bytes)> = (0..100)
        .map(|i| (format!("img{i}"), image_data(100_000 + i)))
        .collect();
    for (name, data) in &images {
        server.api.add(
            name,
            FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
        );
    }
    // Every head arrives while every body waits at the gate: the fills overlap.
    let mut heads = Vec::new();
    for (name, _) in &images {
        let server = Arc::clone(&server);
        let name = name.clone();
        heads.push(tokio::spawn(async move { server.get(&name, OWNER).await }));
    }
    let mut responses = Vec::new();
    for head in heads {
        responses.push(head.await.unwrap());
    }
    let statuses: Vec<String> = responses
        .iter()
        .map(|r| cache_status(r).to_owned())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "MISS").count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "BYPASS").count(),
        96,
        "{statuses:?}"
    );
    gate.add_permits(100_000);
    for (response, (_, data)) in responses.into_iter().zip(&images) {
        assert_eq!(response.bytes().await.unwrap(), *data);
    }
    server.cache.idle().await;
    let cached_count = images
        .iter()
        .filter(|(name, _)| cached(&server, name))
        .count();
    assert_eq!(cached_count, 4);
    assert_metric(
        &server,
        "image_cache_fills_declined_total{limit=\"max_concurrent_fills\"}",
        96,
    );
    // The slots come free as the fills end: the next miss fills.
    let (next, data) = images
        .iter()
        .find(|(name, _)| !cached(&server, name))
        .unwrap();
    let mut status = String::new();
    for _ in 0..100 {
        let response = server.get(next, OWNER).await;
        status = cache_status(&response).to_owned();
        assert_eq!(response.bytes().await.unwrap(), *data);
        if status == "MISS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "MISS");
    server.cache.idle().await;
    assert!(cached(&server, next));
}
