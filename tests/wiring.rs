//! The ways an axum user wires `CacheLayer` and `CacheManageLayer`: each one caches, or panics
//! when the router is built, saying what to write instead (as axum does for a bad route).

mod common;

use axum::routing::get;
use axum::Router;
use common::Captured;
use tower::Layer;
use tower_image_cache::layer::MetadataThrough;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
#[cfg(feature = "axum")]
use tower_image_cache::ImageCacheRouter;
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

const IMAGE: &str = "the bytes of a small image";

fn api() -> Router {
    Router::new()
        .route(
            "/v2/images/{id}",
            get(|| async { r#"{"status": "active"}"# }),
        )
        .route("/v2/images/{id}/file", get(|| async { IMAGE }))
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v2/images/img/file")
}

/// Downloads `url` twice, waiting for the cache to settle between; returns both
/// `X-Cache-Status` values.
async fn twice(url: &str, cache: &ImageCache) -> [String; 2] {
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200);
        statuses.push(
            response.headers()["x-cache-status"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(response.text().await.unwrap(), IMAGE);
        cache.idle().await;
    }
    [statuses[0].clone(), statuses[1].clone()]
}

fn open() -> (tempfile::TempDir, ImageCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    (dir, cache)
}

/// What a panic said, or `None` when `build` did not panic.
fn panic_of(build: impl FnOnce()) -> Option<String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build));
    std::panic::set_hook(hook);
    let payload = outcome.err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn router_layer_with_the_default_check_panics_when_built_naming_the_one_liner() {
    for route_layer in [false, true] {
        let (_dir, cache) = open();
        let layer = CacheLayer::new(cache.clone(), InnerMetadata::new());
        let said = panic_of(|| {
            let _ = if route_layer {
                api().route_layer(layer)
            } else {
                api().layer(layer)
            };
        })
        .unwrap_or_else(|| panic!("route_layer {route_layer}: built without a panic"));
        assert!(said.contains("router.with_image_cache(layer)"), "{said}");
        assert!(
            said.contains("MetadataThrough::new(router.clone()"),
            "{said}"
        );
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_one_liners_cache_manage_and_prefetch() {
    let (logs, _guard) = Captured::start();
    let (_dir, cache) = open();
    let app = api()
        .with_image_cache(CacheLayer::new(cache.clone(), InnerMetadata::new()))
        .with_cache_management(
            CacheManageLayer::new(cache.clone(), StaticToken::new("admin")).service_token("admin"),
        );
    let url = serve(app).await;
    assert_eq!(twice(&url, &cache).await, ["MISS", "HIT"]);
    uncache_then_prefetch(&url, &cache, &logs).await;
}

/// What an outer auth layer found out about the caller.
#[cfg(feature = "axum")]
#[derive(Clone)]
struct Claims {
    project: &'static str,
}

/// The API of `api()`, answering only requests an outer layer gave `Claims` (axum answers 500
/// without them).
#[cfg(feature = "axum")]
fn api_needing_claims() -> Router {
    use axum::Extension;
    Router::new()
        .route(
            "/v2/images/{id}",
            get(|Extension(claims): Extension<Claims>| async move {
                assert_eq!(claims.project, "demo");
                r#"{"status": "active"}"#
            }),
        )
        .route(
            "/v2/images/{id}/file",
            get(|Extension(_): Extension<Claims>| async { IMAGE }),
        )
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn an_outer_layer_s_extension_reaches_the_check_when_carried() {
    let with_claims = |app: Router| {
        app.layer(axum::middleware::from_fn(
            |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
                request.extensions_mut().insert(Claims { project: "demo" });
                next.run(request).await
            },
        ))
    };
    // Not carried: the check's requests lack the claims, the API cannot answer them, and the
    // image is never served from the cache.
    let (_dir, cache) = open();
    let app = with_claims(
        api_needing_claims().with_image_cache(CacheLayer::new(cache.clone(), InnerMetadata::new())),
    );
    let url = serve(app).await;
    for _ in 0..2 {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(
            response.status(),
            503,
            "the API cannot decide for the cache"
        );
    }
    assert!(!cache.is_cached(&tower_image_cache::ImageId::new("img").unwrap()));

    // Carried: the check asks as the caller, and the image is cached.
    let (_dir, cache) = open();
    let layer = CacheLayer::new(cache.clone(), InnerMetadata::new()).carry_extension::<Claims>();
    let url = serve(with_claims(api_needing_claims().with_image_cache(layer))).await;
    assert_eq!(twice(&url, &cache).await, ["MISS", "HIT"]);
}

#[tokio::test]
async fn router_layer_and_route_layer_cache_with_the_check_given_the_router() {
    for route_layer in [false, true] {
        let (_dir, cache) = open();
        let check = MetadataThrough::new(api(), InnerMetadata::new());
        let layer = CacheLayer::new(cache.clone(), check);
        let app = if route_layer {
            api().route_layer(layer)
        } else {
            api().layer(layer)
        };
        let url = serve(app).await;
        assert_eq!(
            twice(&url, &cache).await,
            ["MISS", "HIT"],
            "route_layer: {route_layer}"
        );
    }
}

#[tokio::test]
async fn the_layer_around_the_whole_router_caches() {
    let (_dir, cache) = open();
    let app = Router::new()
        .fallback_service(CacheLayer::new(cache.clone(), InnerMetadata::new()).layer(api()));
    let url = serve(app).await;
    assert_eq!(twice(&url, &cache).await, ["MISS", "HIT"]);

    let (_dir, cache) = open();
    let service = tower::ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone(), InnerMetadata::new()))
        .service(api());
    let url = serve(Router::new().fallback_service(service)).await;
    assert_eq!(twice(&url, &cache).await, ["MISS", "HIT"]);
}

#[tokio::test]
async fn management_on_single_routes_panics_when_built_naming_the_one_liner() {
    let (_dir, cache) = open();
    let manage =
        CacheManageLayer::new(cache.clone(), StaticToken::new("admin")).service_token("admin");
    let said = panic_of(|| {
        let _ = api().layer(manage);
    })
    .expect("built without a panic");
    assert!(
        said.contains(".with_cache_management(manage_layer)"),
        "{said}"
    );
    assert!(said.contains("api_through"), "{said}");
}

#[tokio::test]
async fn management_around_the_whole_router_queues_and_prefetches() {
    let (logs, _guard) = Captured::start();
    let (_dir, cache) = open();
    let service = tower::ServiceBuilder::new()
        .layer(
            CacheManageLayer::new(cache.clone(), StaticToken::new("admin")).service_token("admin"),
        )
        .layer(CacheLayer::new(cache.clone(), InnerMetadata::new()))
        .service(api());
    let url = serve(Router::new().fallback_service(service))
        .await
        .replace("/v2/images/img/file", "/v2/cache/img");
    queue_and_wait_for_prefetch(&url, &cache, &logs).await;
    assert!(logs.text().is_empty(), "{}", logs.text());
}

#[tokio::test]
async fn management_on_single_routes_works_given_the_router() {
    let (logs, _guard) = Captured::start();
    let (_dir, cache) = open();
    // axum's idiom, both layers with Router::layer; each check is given the router it needs.
    let cached = api().layer(CacheLayer::new(
        cache.clone(),
        MetadataThrough::new(api(), InnerMetadata::new()),
    ));
    // `with_state(())` builds each route's layers once, as serving does; a Router called as it
    // is builds them anew for every request, and a fill would end with its request.
    let app = cached.clone().layer(
        CacheManageLayer::new(cache.clone(), StaticToken::new("admin"))
            .service_token("admin")
            .api_through(cached.with_state(())),
    );
    let url = serve(app).await;
    assert_eq!(twice(&url, &cache).await, ["MISS", "HIT"]);
    uncache_then_prefetch(&url, &cache, &logs).await;
}

/// Through the management routes beside the download `url`, as the admin: `DELETE` the cached
/// image (204, gone), then queue it and wait for the prefetcher, with nothing logged.
async fn uncache_then_prefetch(url: &str, cache: &ImageCache, logs: &Captured) {
    let manage = url.replace("/v2/images/img/file", "/v2/cache/img");
    let deleted = reqwest::Client::new()
        .delete(&manage)
        .header("x-auth-token", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let id = tower_image_cache::ImageId::new("img").unwrap();
    assert!(!cache.is_cached(&id));
    queue_and_wait_for_prefetch(&manage, cache, logs).await;
    assert!(logs.text().is_empty(), "{}", logs.text());
}

/// `PUT` of the management route `url` (`/v2/cache/img`) as the admin: 202, then the image is
/// prefetched (the logs are shown if it is not).
async fn queue_and_wait_for_prefetch(url: &str, cache: &ImageCache, logs: &Captured) {
    let queued = reqwest::Client::new()
        .put(url)
        .header("x-auth-token", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    let id = tower_image_cache::ImageId::new("img").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cache.is_cached(&id) {
        assert!(
            std::time::Instant::now() < deadline,
            "not prefetched: {}",
            logs.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A fill cut mid-body is resumed with `Range` by a request of the layer's own: it carries the
/// claims too (the API below refuses a download without them), so the client gets the whole
/// image and it is cached.
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_resumed_fill_carries_the_extension_too() {
    use axum::body::Body;
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::Extension;

    const DATA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let downloads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = downloads.clone();
    let file = move |Extension(_): Extension<Claims>, headers: HeaderMap| {
        let counted = counted.clone();
        async move {
            let range = headers
                .get(header::RANGE)
                .map(|v| v.to_str().unwrap().to_owned());
            let from = match range.as_deref() {
                Some("bytes=0-0") => {
                    let answer = [(header::CONTENT_RANGE, format!("bytes 0-0/{}", DATA.len()))];
                    return (StatusCode::PARTIAL_CONTENT, answer, &DATA[..1]).into_response();
                }
                Some(range) => range["bytes=".len()..range.len() - 1]
                    .parse::<usize>()
                    .unwrap(),
                None => 0,
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if from == 0 {
                // The whole image announced, half of it sent, then the connection's error.
                let half: Result<bytes::Bytes, std::io::Error> =
                    Ok(bytes::Bytes::from_static(&DATA[..DATA.len() / 2]));
                let cut = Err(std::io::Error::other("the upstream connection was cut"));
                let body = Body::from_stream(futures_util::stream::iter([half, cut]));
                return ([(header::CONTENT_LENGTH, DATA.len().to_string())], body).into_response();
            }
            let content_range = format!("bytes {from}-{}/{}", DATA.len() - 1, DATA.len());
            let answer = [(header::CONTENT_RANGE, content_range)];
            (StatusCode::PARTIAL_CONTENT, answer, &DATA[from..]).into_response()
        }
    };
    let api = Router::new()
        .route(
            "/v2/images/{id}",
            get(|Extension(_): Extension<Claims>| async { r#"{"status": "active"}"# }),
        )
        .route("/v2/images/{id}/file", get(file));
    let (_dir, cache) = open();
    let layer = CacheLayer::new(cache.clone(), InnerMetadata::new()).carry_extension::<Claims>();
    let app = api.with_image_cache(layer).layer(axum::middleware::from_fn(
        |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
            request.extensions_mut().insert(Claims { project: "demo" });
            next.run(request).await
        },
    ));
    let url = serve(app).await;
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), DATA, "the cut is not seen");
    cache.idle().await;
    assert_eq!(
        downloads.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one read, one resume"
    );
    assert!(cache.is_cached(&tower_image_cache::ImageId::new("img").unwrap()));
}
