//! The cache and HTTP compression (python-glanceclient sends `Accept-Encoding: gzip, deflate`):
//! a compressing service inside the cache is asked for the plain bytes, one that compresses
//! anyway is passed through as `BYPASS`, and a `CompressionLayer` outside whose predicate honours
//! the `Cache-Control: no-transform` the cache puts on image data leaves hits, misses, their
//! ranges and their headers alone.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use common::{cache_status, image_data, md5_hex, Behavior, FakeApi, FakeImage, OWNER};
use http::{Extensions, HeaderMap, StatusCode, Version};
use tower::Layer;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::{CompressionLayer, DefaultPredicate};
use tower_image_cache::layer::forbids_transform;
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageId, InnerMetadata};

const CLIENT_ENCODINGS: &str = "gzip, deflate";

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("x-auth-token", OWNER)
        .header("accept-encoding", CLIENT_ENCODINGS);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_compressing_inner_service_is_asked_for_the_plain_image() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let api = FakeApi::new();
    // A compressible image, so the compression layer would compress it if asked to.
    let data = bytes::Bytes::from(vec![b'a'; 256 * 1024]);
    api.add("img", FakeImage::private(data.clone()));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    let inner = CompressionLayer::new().layer(api.router().layer(axum::middleware::map_request(
        move |request: axum::extract::Request| {
            let seen = Arc::clone(&seen);
            async move {
                if request.uri().path().ends_with("/file") {
                    // The access check's one-byte probe aside: the fill's own request.
                    if !request.headers().contains_key("range") {
                        let encoding = request.headers().get("accept-encoding").cloned();
                        seen.lock().unwrap().push(encoding);
                    }
                }
                request
            }
        },
    )));
    let app = Router::new()
        .fallback_service(CacheLayer::new(cache.clone(), InnerMetadata::new()).layer(inner));
    let url = format!("{}/v2/images/img/file", serve(app).await);

    let miss = get(&url, &[]).await;
    assert_eq!(cache_status(&miss), "MISS");
    assert!(miss.headers().get("content-encoding").is_none());
    assert_eq!(miss.bytes().await.unwrap(), data);
    cache.idle().await;
    assert!(cache.is_cached(&ImageId::new("img").unwrap()));
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        [Some(http::HeaderValue::from_static("identity"))],
        "the fill asked for the identity encoding"
    );

    let hit = get(&url, &[]).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn an_image_sent_encoded_anyway_is_passed_through_uncached() {
    let server = common::TestServer::start().await;
    let data = image_data(100_000);
    server.api.add(
        "gzip",
        FakeImage::private(data.clone()).behavior(Behavior::Encoded),
    );
    for _ in 0..2 {
        let response = get(&server.url("/v2/images/gzip/file"), &[]).await;
        assert_eq!(cache_status(&response), "BYPASS");
        assert_eq!(response.headers()["content-encoding"], "gzip");
        response.bytes().await.unwrap();
        server.cache.idle().await;
        server.assert_not_committed("gzip");
    }
}

/// The predicate the layer docs give a `CompressionLayer` outside the cache: tower-http's
/// default, and never a response that says `Cache-Control: no-transform`.
fn outer_predicate() -> impl Predicate {
    DefaultPredicate::new().and(
        |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| {
            !forbids_transform(headers)
        },
    )
}

fn is_plain_image_answer(response: &reqwest::Response, length: usize) {
    let headers = response.headers();
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers["content-length"], length.to_string());
    assert_eq!(headers["cache-control"], "no-transform");
}

#[tokio::test]
async fn an_outer_compression_layer_with_the_documented_predicate_leaves_hits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let api = FakeApi::new();
    let data = bytes::Bytes::from(vec![b'z'; 300_000]);
    api.add("img", FakeImage::private(data.clone()));
    let cached = CacheLayer::new(cache.clone(), InnerMetadata::new()).layer(api.router());
    let app = Router::new()
        .fallback_service(cached)
        .layer(CompressionLayer::new().compress_when(outer_predicate()));
    let base = serve(app).await;
    let url = format!("{base}/v2/images/img/file");

    let miss = get(&url, &[]).await;
    assert_eq!(cache_status(&miss), "MISS");
    is_plain_image_answer(&miss, data.len());
    assert_eq!(miss.bytes().await.unwrap(), data);
    cache.idle().await;

    let hit = get(&url, &[]).await;
    assert_eq!(cache_status(&hit), "HIT");
    is_plain_image_answer(&hit, data.len());
    assert_eq!(hit.headers()["accept-ranges"], "bytes");
    assert_eq!(hit.headers()["content-md5"], md5_hex(&data));
    assert_eq!(hit.headers()["etag"], format!("\"{}\"", md5_hex(&data)));
    assert_eq!(hit.bytes().await.unwrap(), data);

    let part = get(&url, &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status(), 206);
    is_plain_image_answer(&part, 10);
    assert_eq!(part.bytes().await.unwrap(), data.slice(10..20));

    // The API's own documents are still compressed for clients that ask.
    let document = get(&format!("{base}/v2/images/img"), &[]).await;
    assert_eq!(document.status(), 200);
    assert_eq!(document.headers()["content-encoding"], "gzip");
}
