//! CacheLayer over a real socket: hits, fills, failures, access and eviction.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;
use tower_image_cache::{CacheConfig, ImageCache, ImageId, TrustAll};

fn id(s: &str) -> ImageId {
    ImageId::new(s).unwrap()
}

#[tokio::test]
async fn miss_then_hit_serves_identical_bytes_from_the_file() {
    let server = TestServer::start().await;
    let data = image_data(3 * 1024 * 1024 + 17);
    server.api.add("img", FakeImage::private(data.clone()));

    let miss = server.get("img", OWNER).await;
    assert_eq!(miss.status(), 200);
    assert_eq!(cache_status(&miss), "MISS");
    assert_eq!(
        miss.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(miss.bytes().await.unwrap(), data);
    server.cache.idle().await;

    assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);
    let record = server.cache.cached_image(&id("img")).unwrap();
    assert_eq!((record.size, record.hits), (data.len() as u64, 0));

    let hit = server.get("img", OWNER).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(cache_status(&hit), "HIT");
    let md5 = md5_hex(&data);
    assert_eq!(hit.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        hit.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(hit.headers()["content-md5"], md5.as_str());
    assert_eq!(hit.headers()["etag"], format!("\"{md5}\"").as_str());
    assert_eq!(hit.headers()["accept-ranges"], "bytes");
    assert_eq!(hit.bytes().await.unwrap(), data);

    assert_eq!(
        server.api.body_requests(),
        1,
        "the hit did not ask the wrapped service for the body"
    );
    assert_eq!(server.cache.cached_image(&id("img")).unwrap().hits, 1);
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "img", "incomplete", "invalid"]
    );
}

#[tokio::test]
async fn head_of_a_cached_image_is_answered_from_its_record() {
    let server = TestServer::start().await;
    let data = image_data(1000);
    server
        .add_cached("img", FakeImage::private(data.clone()))
        .await;

    let head = server
        .client
        .head(server.url("/v2/images/img/file"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(cache_status(&head), "HIT");
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.headers()["content-md5"], md5_hex(&data).as_str());
    assert!(head.bytes().await.unwrap().is_empty());
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test]
async fn a_partly_read_hit_is_not_counted() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let api = FakeApi::new();
    let data = image_data(3 * 1024 * 1024);
    api.add("img", FakeImage::private(data.clone()));
    // axum's Router::layer wraps each route; the check asks the whole router.
    let check = tower_image_cache::layer::MetadataThrough::new(
        api.router(),
        tower_image_cache::InnerMetadata::new(),
    );
    let app = api
        .router()
        .layer(tower_image_cache::CacheLayer::new(cache.clone(), check));
    let request = || {
        axum::http::Request::get("/v2/images/img/file")
            .header("x-auth-token", OWNER)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let miss = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(miss.into_body().collect().await.unwrap().to_bytes(), data);
    cache.idle().await;

    let hit = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(hit.headers()["x-cache-status"], "HIT");
    let mut body = hit.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.len() < data.len());
    drop(body);
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 0);

    let hit = app.oneshot(request()).await.unwrap();
    assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), data);
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 1);
}

/// A cache in front of an API sending `img` (`data`) with `behavior`, and the first download
/// of it (a MISS that fills).
async fn first_download(
    data: &bytes::Bytes,
    behavior: Behavior,
) -> (TestServer, reqwest::Response) {
    let server = TestServer::start().await;
    server
        .api
        .add("img", FakeImage::private(data.clone()).behavior(behavior));
    let response = server.get("img", OWNER).await;
    assert_eq!(response.status(), 200);
    assert_eq!(cache_status(&response), "MISS");
    (server, response)
}

#[tokio::test]
/// The bytes disagree with their checksum: the client's body ends with an error instead of its
/// last chunk (never a complete-looking image), and nothing is committed.
async fn checksum_mismatch_fails_the_body_and_commits_nothing() {
    let data = image_data(200_000);
    let (server, response) = first_download(&data, Behavior::WrongChecksum).await;
    assert!(response.bytes().await.is_err());
    server.cache.idle().await;

    assert!(!server.cache.is_cached(&id("img")));
    assert!(!server.cache_dir().join("img").exists());
    assert_eq!(
        std::fs::read(server.cache_dir().join("invalid/img")).unwrap(),
        data
    );
    assert_eq!(cache_status(&server.get("img", OWNER).await), "MISS");
}

#[tokio::test]
/// An MD5-only image whose download names its own (poisoned) bytes in `Content-MD5`: the API's
/// metadata `checksum` decides, so the body fails and nothing is committed.
async fn a_content_md5_naming_other_bytes_does_not_poison_an_md5_only_image() {
    let data = image_data(200_000);
    let (server, response) = first_download(&data, Behavior::PoisonedMd5).await;
    assert!(
        response.bytes().await.is_err(),
        "poisoned bytes must not arrive as a whole image"
    );
    server.cache.idle().await;
    server.assert_not_committed("img");
    assert!(server.cache_dir().join("invalid/img").exists());
    assert_eq!(cache_status(&server.get("img", OWNER).await), "MISS");
}

#[tokio::test]
async fn a_short_upstream_body_fails_the_client_and_commits_nothing() {
    let server = TestServer::start().await;
    server.api.add(
        "img",
        FakeImage::private(image_data(100_000)).behavior(Behavior::ShortBody),
    );

    // The connection is cut: either before the head was flushed or in the body; never a
    // complete-looking response.
    let response = server
        .client
        .get(server.url("/v2/images/img/file"))
        .header("x-auth-token", OWNER)
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 200);
        assert!(
            response.bytes().await.is_err(),
            "a short body must not look complete"
        );
    }
    server.cache.idle().await;

    server.assert_not_committed("img");
}

#[tokio::test]
async fn an_upstream_error_mid_stream_fails_the_client_and_commits_nothing() {
    // Without resume attempts (tests/resume.rs has the cut fills that resume).
    let server = TestServer::start_with_layer(
        |dir| ImageCache::open(CacheConfig::new(dir)).unwrap(),
        tower_image_cache::InnerMetadata::new(),
        |layer| layer.upstream_resume_attempts(0),
    )
    .await;
    server.api.add(
        "img",
        FakeImage::private(image_data(1024 * 1024)).behavior(Behavior::FailMidStream),
    );

    let response = server.get("img", OWNER).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
    server.cache.idle().await;

    server.assert_not_committed("img");
    assert!(server.cache_dir().join("invalid/img").exists());
}

#[cfg(feature = "fuzzing")]
#[tokio::test]
async fn a_failing_cache_writer_never_reaches_the_client() {
    let server = TestServer::start_with(|dir| {
        ImageCache::open_with_io(CacheConfig::new(dir), Arc::new(FullDisk)).unwrap()
    })
    .await;
    let data = image_data(2 * 1024 * 1024 + 3);
    server.api.add("img", FakeImage::private(data.clone()));

    let response = server.get("img", OWNER).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), data);
    server.cache.idle().await;

    assert!(!server.cache.is_cached(&id("img")));
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "incomplete", "invalid"]
    );
    assert!(listing(&server.cache_dir().join("incomplete")).is_empty());
}

/// Caches `img` for its owner, then returns the server.
async fn server_with_cached_image(data: &bytes::Bytes) -> TestServer {
    let server = TestServer::start().await;
    server
        .add_cached("img", FakeImage::private(data.clone()))
        .await;
    assert!(server.cache.is_cached(&id("img")));
    server
}

#[tokio::test]
async fn callers_the_api_refuses_are_refused_by_the_cache() {
    let data = image_data(5000);
    let server = server_with_cached_image(&data).await;

    let anonymous = server.get("img", "").await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(cache_status(&anonymous), "");
    let bad_token = server.get("img", "forged").await;
    assert_eq!(bad_token.status(), 401);
    let suspended = server.get("img", SUSPENDED).await;
    assert_eq!(suspended.status(), 403);
    assert_eq!(cache_status(&suspended), "");
    let other_project = server.get("img", OTHER).await;
    assert_eq!(other_project.status(), 404);
    assert_eq!(cache_status(&other_project), "");
    assert_ne!(other_project.bytes().await.unwrap(), data);

    assert_eq!(server.api.body_requests(), 1);
    assert_eq!(server.cache.cached_image(&id("img")).unwrap().hits, 0);
    // The admin may see every image.
    assert_eq!(server.get("img", ADMIN).await.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn a_deleted_image_is_never_served_even_with_its_file_there() {
    let data = image_data(5000);
    let server = server_with_cached_image(&data).await;
    // Deleted behind the cache's back (another API node).
    server.api.update("img", |image| image.deleted = true);

    let response = server.get("img", OWNER).await;
    assert_eq!(response.status(), 404);
    assert!(server.cache_dir().join("img").exists());
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test]
async fn a_deactivated_image_is_passed_through_to_the_api() {
    let data = image_data(5000);
    let server = server_with_cached_image(&data).await;
    server
        .api
        .update("img", |image| image.status = "deactivated");

    let owner = server.get("img", OWNER).await;
    assert_eq!(
        owner.status(),
        403,
        "the API's answer, not the cached bytes"
    );
    // The API's refusal of the download, as it gave it: no cache header.
    assert_eq!(cache_status(&owner), "");
    let admin = server.get("img", ADMIN).await;
    assert_eq!(admin.status(), 200);
    assert_eq!(cache_status(&admin), "BYPASS");
    assert_eq!(admin.bytes().await.unwrap(), data);
    assert_eq!(
        server.api.body_requests(),
        2,
        "the admin's download came from the API"
    );
}

#[tokio::test]
async fn trust_all_serves_hits_without_asking_the_api() {
    let server = TestServer::start_with_check(
        |dir| ImageCache::open(CacheConfig::new(dir)).unwrap(),
        TrustAll,
    )
    .await;
    let data = image_data(5000);
    server
        .add_cached("img", FakeImage::private(data.clone()))
        .await;
    let hit = server.get("img", OWNER).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);
    assert_eq!(
        server
            .api
            .metadata_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn delete_through_the_api_evicts_the_image() {
    let data = image_data(5000);
    let server = server_with_cached_image(&data).await;

    let deleted = server
        .client
        .delete(server.url("/v2/images/img"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!server.cache.is_cached(&id("img")));
    assert!(!server.cache_dir().join("img").exists());

    // A refused delete evicts nothing.
    server
        .add_cached("other", FakeImage::private(data.clone()))
        .await;
    let refused = server
        .manage_as(reqwest::Method::DELETE, "/v2/images/other", OTHER)
        .await;
    assert_eq!(refused.status(), 404);
    assert!(server.cache.is_cached(&id("other")));
}

#[tokio::test]
async fn an_upload_evicts_the_old_data() {
    let data = image_data(5000);
    let server = server_with_cached_image(&data).await;
    let uploaded = server
        .client
        .put(server.url("/v2/images/img/file"))
        .header("x-auth-token", OWNER)
        .body("new data")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 204);
    assert!(!server.cache.is_cached(&id("img")));
    assert_eq!(
        server.get("img", OWNER).await.bytes().await.unwrap(),
        "new data"
    );
}

#[tokio::test]
async fn a_delete_during_a_fill_leaves_nothing_committed() {
    let server = TestServer::start().await;
    let gate = Arc::new(Semaphore::new(2));
    let data = image_data(1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );

    let mut response = server.get("img", OWNER).await;
    assert_eq!(cache_status(&response), "MISS");
    let mut received = response.chunk().await.unwrap().unwrap().to_vec();
    assert!(server.cache.is_filling(&id("img")));

    let deleted = server
        .client
        .delete(server.url("/v2/images/img"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    gate.add_permits(1000);
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(
        received, data,
        "the client that started the download still gets it"
    );
    server.cache.idle().await;
    server.assert_not_committed("img");
}

#[tokio::test]
async fn responses_that_are_not_whole_images_are_not_cached() {
    let server = TestServer::start().await;
    let data = image_data(5000);
    server.api.add(
        "empty",
        FakeImage::private(data.clone()).behavior(Behavior::NoContent),
    );
    server.api.add(
        "gzip",
        FakeImage::private(data.clone()).behavior(Behavior::Encoded),
    );
    server.api.add("ranged", FakeImage::private(data.clone()));

    assert_eq!(server.get("empty", OWNER).await.status(), 204);
    assert_eq!(server.get("missing", OWNER).await.status(), 404);
    let encoded = server.get("gzip", OWNER).await;
    assert_eq!(encoded.headers()["content-encoding"], "gzip");
    encoded.bytes().await.unwrap();
    let partial = server
        .client
        .get(server.url("/v2/images/ranged/file"))
        .header("x-auth-token", OWNER)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.bytes().await.unwrap(), data.slice(10..20));
    server.cache.idle().await;

    assert!(server.cache.cached_images().is_empty());
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "incomplete", "invalid"]
    );
    assert!(listing(&server.cache_dir().join("invalid")).is_empty());
}

#[tokio::test]
async fn unsafe_ids_pass_through_and_touch_no_disk() {
    let server = TestServer::start().await;
    let long = "a".repeat(300);
    for target in [
        "/v2/images/../file".to_owned(),
        "/v2/images/%2e%2e/file".to_owned(),
        "/v2/images/a%2Fb/file".to_owned(),
        "/v2/images/a%5Cb/file".to_owned(),
        "/v2/images/%00/file".to_owned(),
        format!("/v2/images/{long}/file"),
    ] {
        let status = raw_status(server.addr, "GET", &target, OWNER).await;
        assert!((400..500).contains(&status), "{target}: {status}");
    }
    server.cache.idle().await;
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "incomplete", "invalid"]
    );
    assert!(listing(&server.cache_dir().join("incomplete")).is_empty());
    assert!(listing(&server.cache_dir().join("invalid")).is_empty());
    assert!(listing(server.dir.path())
        .iter()
        .all(|name| name == "cache"));
}

#[tokio::test]
async fn other_routes_pass_through_untouched() {
    let server = TestServer::start().await;
    server.api.add("img", FakeImage::private(image_data(10)));
    let metadata = server
        .client
        .get(server.url("/v2/images/img"))
        .header("x-auth-token", OWNER)
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    assert!(metadata.headers().get("x-cache-status").is_none());
    let body: serde_json::Value = serde_json::from_slice(&metadata.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "active");
}

#[tokio::test]
async fn reopen_after_a_crash_serves_only_verified_images() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let good = image_data(4000);
    {
        let cache = ImageCache::open(CacheConfig::new(&cache_dir)).unwrap();
        let mut fill = cache
            .begin_fill(
                &id("good"),
                tower_image_cache::store::Expected::default().size(4000),
            )
            .unwrap();
        fill.write(&good).unwrap();
        fill.finish().unwrap();
        let mut fill = cache.begin_fill(&id("gone"), Default::default()).unwrap();
        fill.write(b"x").unwrap();
        fill.finish().unwrap();
    }
    // A crash mid-fill, a file lost under its entry, and a corrupted index.
    std::fs::write(cache_dir.join("incomplete/partial"), b"half an image").unwrap();
    std::fs::remove_file(cache_dir.join("gone")).unwrap();
    for entry in std::fs::read_dir(cache_dir.join("cache.db")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"\xff garbage \xff").unwrap();
        }
    }

    // The server opens the crashed cache's directory.
    let server =
        TestServer::start_with(|_| ImageCache::open(CacheConfig::new(&cache_dir)).unwrap()).await;
    server.api.add("good", FakeImage::private(good.clone()));
    server
        .api
        .add("partial", FakeImage::private(image_data(3000)));
    server.api.add("gone", FakeImage::private(image_data(1)));

    let hit = server.get("good", OWNER).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), good);
    let partial = server.get("partial", OWNER).await;
    assert_eq!(cache_status(&partial), "MISS");
    assert_eq!(partial.bytes().await.unwrap(), image_data(3000));
    assert_eq!(cache_status(&server.get("gone", OWNER).await), "MISS");
    assert_eq!(server.api.body_requests(), 2);
}

#[tokio::test]
async fn an_os_hash_mismatch_from_the_metadata_is_not_committed() {
    let server = TestServer::start().await;
    let data = image_data(300_000);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::WrongOsHash),
    );

    let response = server.get("img", OWNER).await;
    assert_eq!(cache_status(&response), "MISS");
    assert!(response.bytes().await.is_err());
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&id("img")));
    assert_eq!(
        std::fs::read(server.cache_dir().join("invalid/img")).unwrap(),
        data
    );
}

/// A multihash of an algorithm the cache does not know: the client gets its bytes, whole,
/// nothing is cached or left on disk, each time, and the log says why.
#[tokio::test]
async fn an_unknown_multihash_algorithm_is_served_but_not_cached() {
    let (logs, _guard) = common::Captured::start();
    let server = TestServer::start().await;
    let data = image_data(200_000);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::UnknownHashAlgorithm),
    );
    for _ in 0..2 {
        let response = server.get("img", OWNER).await;
        assert_eq!(response.status(), 200);
        assert_eq!(cache_status(&response), "MISS");
        assert_eq!(response.bytes().await.unwrap(), data);
    }
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&id("img")));
    assert!(!server.cache_dir().join("img").exists());
    assert!(!server.cache_dir().join("invalid/img").exists());
    assert!(!server.cache_dir().join("incomplete/img").exists());
    assert_eq!(server.api.body_requests(), 2);
    let text = logs.text();
    assert!(
        text.contains("WARN")
            && text.contains("not caching this download")
            && text.contains("blake3"),
        "{text}"
    );
}

#[tokio::test]
async fn the_cache_status_header_can_be_turned_off() {
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let api = FakeApi::new();
    api.add("img", FakeImage::private(image_data(10)));
    let layer = tower_image_cache::CacheLayer::new(cache, TrustAll).cache_status_header(false);
    let service = tower::Layer::layer(&layer, api.router());
    let request = axum::http::Request::get("/v2/images/img/file")
        .header("x-auth-token", OWNER)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-cache-status").is_none());
}

/// The layer under plain hyper-util, without axum's server: any tower service will do.
#[tokio::test]
async fn works_under_hyper_util_with_any_tower_service() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    type ReqBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;
    let data = image_data(100_000);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = {
        let (data, calls) = (data.clone(), calls.clone());
        tower::service_fn(move |request: http::Request<ReqBody>| {
            let (data, calls) = (data.clone(), calls.clone());
            async move {
                let body = match request.uri().path() {
                    "/v2/images/img" => bytes::Bytes::from_static(br#"{"status": "active"}"#),
                    // The access check's one-byte probe, answered whole (this service ignores
                    // Range), is not a read of the image for the cache.
                    _ if request.headers().contains_key(http::header::RANGE) => data,
                    _ => {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        data
                    }
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let service = ServiceBuilder::new()
        .map_request(|request: http::Request<hyper::body::Incoming>| request.map(BodyExt::boxed))
        .layer(tower_image_cache::CacheLayer::new(
            cache.clone(),
            tower_image_cache::InnerMetadata::new(),
        ))
        .service(inner);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v2/images/img/file");
    let miss = client.get(&url).send().await.unwrap();
    assert_eq!(cache_status(&miss), "MISS");
    assert_eq!(miss.bytes().await.unwrap(), data);
    cache.idle().await;
    let hit = client.get(&url).send().await.unwrap();
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A fill's file operations where writing always fails, as on a full disk.
#[cfg(feature = "fuzzing")]
struct FullDisk;

#[cfg(feature = "fuzzing")]
impl tower_image_cache::store::FillIo for FullDisk {
    fn write(&self, _: &mut std::fs::File, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(28))
    }
}

#[cfg(feature = "fuzzing")]
struct FailingCreate;

#[cfg(feature = "fuzzing")]
impl tower_image_cache::store::FillIo for FailingCreate {
    fn create(&self, _: &std::path::Path) -> std::io::Result<std::fs::File> {
        Err(std::io::Error::from_raw_os_error(13))
    }
}

#[cfg(feature = "fuzzing")]
#[tokio::test]
async fn a_cache_file_that_cannot_be_created_never_reaches_the_client() {
    let server = TestServer::start_with(|dir| {
        ImageCache::open_with_io(CacheConfig::new(dir), Arc::new(FailingCreate)).unwrap()
    })
    .await;
    let data = image_data(300_000);
    server.api.add("img", FakeImage::private(data.clone()));
    let response = server.get("img", OWNER).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), data);
    assert!(!server.cache.is_cached(&id("img")));
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "incomplete", "invalid"]
    );
}
