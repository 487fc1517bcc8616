//! `/metrics` after a known sequence (a miss that fills, a hit, a fill that fails verification,
//! a follower, a commit over the limit that prunes): every counter and gauge exactly.

mod common;

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::{image_data, Behavior, FakeApi, FakeImage, ADMIN, OWNER};
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageId, InnerMetadata};

const SIZE: usize = 100_000;

async fn serve(cache: &ImageCache, api: &std::sync::Arc<FakeApi>) -> String {
    let service = tower::ServiceBuilder::new()
        .layer(CacheManageLayer::new(cache.clone(), StaticToken::new(ADMIN)).service_token(ADMIN))
        .layer(CacheLayer::new(cache.clone(), InnerMetadata::new()))
        .service(api.router());
    let scraped = cache.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let cache = scraped.clone();
                async move { cache.blocking(|c| c.render_metrics()).await.unwrap() }
            }),
        )
        .fallback_service(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn download(base: &str, id: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{base}/v2/images/{id}/file"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    let status = response.headers()["x-cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.bytes().await;
    status
}

/// The value of the sample `line` (name and labels, as printed) in `text`.
fn sample(text: &str, line: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {line} in:\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one image and a half: the second commit prunes the first.
    let cache = ImageCache::open(
        CacheConfig::new(dir.path()).image_cache_max_size((SIZE + SIZE / 2) as u64),
    )
    .unwrap();
    let api = FakeApi::new();
    api.add("first", FakeImage::private(image_data(SIZE)));
    api.add(
        "bad",
        FakeImage::private(image_data(SIZE)).behavior(Behavior::WrongChecksum),
    );
    api.add("second", FakeImage::private(image_data(SIZE)));
    let base = serve(&cache, &api).await;

    assert_eq!(download(&base, "first").await, "MISS");
    cache.idle().await;
    assert_eq!(download(&base, "first").await, "HIT");
    assert_eq!(download(&base, "bad").await, "MISS");
    cache.idle().await;
    assert_eq!(download(&base, "second").await, "MISS");
    cache.idle().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.is_cached(&ImageId::new("first").unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the commit over the limit did not prune"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A condition the cache cannot evaluate passes the request through.
    let ranged = reqwest::Client::new()
        .get(format!("{base}/v2/images/bad/file"))
        .header("x-auth-token", OWNER)
        .header("if-match", "\"x\"")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.headers()["x-cache-status"], "BYPASS");

    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let size = SIZE.to_string();
    for (line, value) in [
        (r#"image_cache_responses_total{status="miss"}"#, "3"),
        (r#"image_cache_responses_total{status="hit"}"#, "1"),
        (
            r#"image_cache_responses_total{status="bypass",reason="unevaluated_condition"}"#,
            "1",
        ),
        ("image_cache_fills_started_total", "3"),
        (r#"image_cache_fills_total{outcome="committed"}"#, "2"),
        (
            r#"image_cache_fills_total{outcome="failed",reason="verification"}"#,
            "1",
        ),
        (r#"image_cache_bytes_total{source="cache"}"#, size.as_str()),
        (r#"image_cache_bytes_total{source="upstream"}"#, "300000"),
        (
            r#"image_cache_removed_files_total{by="prune",kind="image"}"#,
            "1",
        ),
        ("image_cache_pruned_bytes_total", size.as_str()),
        ("image_cache_images", "1"),
        ("image_cache_size_bytes", size.as_str()),
        ("image_cache_max_size_bytes", "150000"),
        ("image_cache_queued_images", "0"),
        // Every decision is shown from the start; the four checked downloads asked the API.
        (
            r#"image_cache_authorization_decisions_total{decision="asked"}"#,
            "4",
        ),
        (
            r#"image_cache_authorization_decisions_total{decision="remembered"}"#,
            "0",
        ),
        (
            r#"image_cache_authorization_decisions_total{decision="stale"}"#,
            "0",
        ),
        (
            r#"image_cache_authorization_decisions_total{decision="unavailable"}"#,
            "0",
        ),
    ] {
        assert_eq!(sample(&text, line), value, "{line}\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    println!("{text}");
}
