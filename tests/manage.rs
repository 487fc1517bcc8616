//! CacheManageLayer over a real socket, like Glance's functional tests of the cache API.

mod common;

use common::*;
use reqwest::Method;
use tower_image_cache::config::DatabaseUrl;
use tower_image_cache::store::Expected;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

fn id(s: &str) -> ImageId {
    ImageId::new(s).unwrap()
}

async fn managed() -> TestServer {
    TestServer::start_managed(|dir| ImageCache::open(CacheConfig::new(dir)).unwrap()).await
}

/// Downloads `image` once as its owner and waits for the commit.
async fn download(server: &TestServer, image: &str) {
    server.get(image, OWNER).await.bytes().await.unwrap();
    server.cache.idle().await;
}

/// `DELETE /v2/cache` as the admin, with `x-image-cache-clear-target: target`.
async fn clear(server: &TestServer, target: &str) -> reqwest::Response {
    clear_as(server, ADMIN, target).await
}

/// `DELETE /v2/cache` with `token`, with `x-image-cache-clear-target: target`.
async fn clear_as(server: &TestServer, token: &str, target: &str) -> reqwest::Response {
    server
        .client
        .delete(server.url("/v2/cache"))
        .header("x-auth-token", token)
        .header("x-image-cache-clear-target", target)
        .send()
        .await
        .unwrap()
}

fn listed_ids(listing: &serde_json::Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = listing[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.get("image_id").unwrap_or(v).as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn listing_shows_records_and_counts_hits() {
    let server = managed().await;
    server.api.add("img", FakeImage::private(image_data(4096)));
    download(&server, "img").await;

    server.api.add("other", FakeImage::private(image_data(100)));
    download(&server, "other").await;

    let listing = json(server.manage(Method::GET, "/v2/cache").await).await;
    let records = listing["cached_images"].as_array().unwrap();
    let record = records.iter().find(|r| r["image_id"] == "img").unwrap();
    let mut keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "checksum",
            "hits",
            "id",
            "image_id",
            "last_accessed",
            "last_modified",
            "size"
        ],
        "the keys of Glance's default driver"
    );
    assert_eq!(record["hits"], 0);
    assert_eq!(record["size"], 4096);
    assert_eq!(record["checksum"], md5_hex(&image_data(4096)));
    assert!(
        record["last_accessed"].is_f64() && record["last_modified"].is_f64(),
        "{record}"
    );
    let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(ids[0] != ids[1] && !ids.contains(&0), "row ids {ids:?}");
    assert_eq!(listing["queued_images"], serde_json::json!([]));
    assert!(
        listing.get("in_progress").is_none(),
        "exactly Glance's keys: {listing}"
    );

    assert_eq!(
        server.get("img", OWNER).await.bytes().await.unwrap().len(),
        4096
    );
    let listing = json(server.manage(Method::GET, "/v2/cache").await).await;
    let hits = |listing: &serde_json::Value| {
        listing["cached_images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["image_id"] == "img")
            .map(|r| r["hits"].clone())
    };
    assert_eq!(hits(&listing), Some(1.into()));
    let legacy = json(server.manage(Method::GET, "/v2/cached_images").await).await;
    assert_eq!(hits(&legacy), Some(1.into()));
    let alias = json(server.manage(Method::GET, "/cached-images").await).await;
    assert_eq!(alias, legacy);
}

#[tokio::test]
async fn delete_one_then_clear_then_legacy_clear() {
    let server = managed().await;
    for n in 0..4 {
        server
            .api
            .add(&format!("img{n}"), FakeImage::private(image_data(1000 + n)));
        download(&server, &format!("img{n}")).await;
    }
    let deleted = server.manage(Method::DELETE, "/v2/cache/img0").await;
    assert_eq!(deleted.status(), 204);
    assert!(deleted.bytes().await.unwrap().is_empty());
    // As Glance: an image the API knows is deleted (204) even when in neither; an unknown one
    // is 404, in Glance's words.
    assert_eq!(
        server
            .manage(Method::DELETE, "/v2/cache/img0")
            .await
            .status(),
        204
    );
    let unknown = server.manage(Method::DELETE, "/v2/cache/nonexistent").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("<h1>404 Not Found</h1>\n  Image nonexistent not found.<br /><br />"));
    let listing = json(server.manage(Method::GET, "/v2/cache").await).await;
    assert_eq!(
        listed_ids(&listing, "cached_images"),
        ["img1", "img2", "img3"]
    );
    assert!(!server.cache_dir().join("img0").exists());

    let legacy = server
        .manage(Method::DELETE, "/v2/cached_images/img1")
        .await;
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.bytes().await.unwrap(), "null");
    let alias = server.manage(Method::DELETE, "/cached-images/img2").await;
    assert_eq!(alias.status(), 200);
    assert_eq!(
        listed_ids(
            &json(server.manage(Method::GET, "/v2/cache").await).await,
            "cached_images"
        ),
        ["img3"]
    );

    assert_eq!(
        server.manage(Method::DELETE, "/v2/cache").await.status(),
        204
    );
    assert!(
        json(server.manage(Method::GET, "/v2/cache").await).await["cached_images"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    for n in 0..2 {
        download(&server, &format!("img{n}")).await;
    }
    let cleared = server.manage(Method::DELETE, "/v2/cached_images").await;
    assert_eq!(cleared.status(), 200);
    assert_eq!(json(cleared).await, serde_json::json!({ "num_deleted": 2 }));
    assert_eq!(
        server.cache_listing(),
        ["cache.db", "incomplete", "invalid"]
    );
}

#[tokio::test]
async fn queueing_prefetches_without_a_client_download() {
    let server = managed().await;
    let data = image_data(300_000);
    server.api.add("img", FakeImage::private(data.clone()));

    let queued = server.manage(Method::PUT, "/v2/cache/img").await;
    assert_eq!(queued.status(), 202);
    eventually("the queued image is cached", || {
        server.cache.is_cached(&id("img"))
    })
    .await;
    assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);
    eventually("the queue is empty", || {
        server.cache.queued_images().unwrap().is_empty()
    })
    .await;
    assert_eq!(server.api.body_requests(), 1);

    // Already cached: accepted, nothing fetched again.
    assert_eq!(
        server.manage(Method::PUT, "/v2/cache/img").await.status(),
        202
    );
    assert_eq!(server.cache.queued_images().unwrap(), Vec::<ImageId>::new());
    // The owner's first download is a hit.
    let hit = server.get("img", OWNER).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(server.api.body_requests(), 1);

    let unknown = server.manage(Method::PUT, "/v2/cache/nonexistent").await;
    assert_eq!(unknown.status(), 404);
    let mut no_data = FakeImage::private(image_data(0));
    no_data.status = "queued";
    server.api.add("empty", no_data);
    let not_active = server.manage(Method::PUT, "/v2/cache/empty").await;
    assert_eq!(not_active.status(), 400);
    assert!(not_active
        .text()
        .await
        .unwrap()
        .contains("Only images with status active can be targeted for queueing"));
    assert!(server.cache.queued_images().unwrap().is_empty());
}

#[tokio::test]
async fn legacy_queue_routes_and_clear_targets() {
    let server = managed().await;
    server
        .api
        .add("cached", FakeImage::private(image_data(100)));
    download(&server, "cached").await;
    // An id the API does not know is refused, as by PUT /v2/cache/{id}, and never queued.
    let unknown = server.manage(Method::PUT, "/v2/queued_images/nope").await;
    assert_eq!(unknown.status(), 404);
    assert!(server.cache.queued_images().unwrap().is_empty());
    // Known images whose download never starts: they stay queued while the prefetcher waits.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    for id in ["q1", "q2", "q3", "q4"] {
        server.api.add(
            id,
            FakeImage::private(image_data(100)).behavior(Behavior::Gated(gate.clone())),
        );
    }
    assert_eq!(
        server
            .manage(Method::PUT, "/v2/queued_images/q1")
            .await
            .bytes()
            .await
            .unwrap(),
        "null"
    );
    assert_eq!(server.manage(Method::PUT, "/queued/q2").await.status(), 200);
    let queued = json(server.manage(Method::GET, "/v2/queued_images").await).await;
    assert_eq!(queued, serde_json::json!({ "queued_images": ["q1", "q2"] }));

    let bogus = clear(&server, "bogus").await;
    assert_eq!(bogus.status(), 400);
    let clear_queue = clear(&server, "queue").await;
    assert_eq!(clear_queue.status(), 204);
    let listing = json(server.manage(Method::GET, "/v2/cache").await).await;
    assert_eq!(listing["queued_images"], serde_json::json!([]));
    assert_eq!(listed_ids(&listing, "cached_images"), ["cached"]);

    server.manage(Method::PUT, "/v2/queued_images/q3").await;
    let clear_cache = clear(&server, "cache").await;
    assert_eq!(clear_cache.status(), 204);
    let listing = json(server.manage(Method::GET, "/v2/cache").await).await;
    assert_eq!(listing["queued_images"], serde_json::json!(["q3"]));
    assert!(listing["cached_images"].as_array().unwrap().is_empty());

    server.manage(Method::PUT, "/v2/queued_images/q4").await;
    assert_eq!(
        server
            .manage(Method::DELETE, "/v2/queued_images/q3")
            .await
            .bytes()
            .await
            .unwrap(),
        "null"
    );
    assert_eq!(
        json(server.manage(Method::DELETE, "/v2/queued_images").await).await,
        serde_json::json!({ "num_deleted": 1 })
    );
    assert!(server.cache.queued_images().unwrap().is_empty());
}

#[tokio::test]
async fn clean_removes_invalid_and_stalled_files_only() {
    let server = managed().await;
    let dir = server.cache_dir();
    std::fs::write(dir.join("invalid/broken"), b"bad").unwrap();
    let stalled = dir.join("incomplete/stalled");
    std::fs::write(&stalled, b"old").unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&stalled)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    std::fs::write(dir.join("incomplete/fresh"), b"new").unwrap();

    let cleaned = server.manage(Method::POST, "/v2/cache/clean").await;
    assert_eq!(cleaned.status(), 200);
    assert_eq!(
        json(cleaned).await,
        serde_json::json!({ "invalid_removed": 1, "stalled_removed": 1 })
    );
    assert!(listing(&dir.join("invalid")).is_empty());
    assert_eq!(listing(&dir.join("incomplete")), ["fresh"]);
}

/// 15 images of 10 KiB cached under a generous limit and read in a known order.
fn cache_fifteen_images(dir: &std::path::Path) -> Vec<String> {
    let cache = ImageCache::open(CacheConfig::new(dir)).unwrap();
    let ids: Vec<String> = (0..15).map(|n| format!("img{n:02}")).collect();
    for image in &ids {
        let mut fill = cache
            .begin_fill(&id(image), Expected::default().size(10 * 1024))
            .unwrap();
        fill.write(&[1u8; 10 * 1024]).unwrap();
        fill.finish().unwrap();
    }
    // Read in reverse order: img14 is the least recently accessed, img00 the most.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for image in ids.iter().rev() {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut reader = cache.open_for_read(&id(image)).unwrap().unwrap();
        runtime.block_on(async { while reader.next_chunk().await.is_some() {} });
    }
    ids
}

#[tokio::test]
async fn prune_removes_the_least_recently_accessed_until_under_the_limit() {
    let prepared = tempfile::tempdir().unwrap();
    let dir = prepared.path().to_path_buf();
    let ids = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || cache_fifteen_images(&dir)
    })
    .await
    .unwrap();
    let server = TestServer::start_managed(|_| {
        ImageCache::open(CacheConfig::new(&dir).image_cache_max_size(100 * 1024)).unwrap()
    })
    .await;

    let pruned = server.manage(Method::POST, "/v2/cache/prune").await;
    assert_eq!(pruned.status(), 200);
    let pruned = json(pruned).await;
    assert_eq!(
        pruned,
        serde_json::json!({ "total_files_pruned": 5, "total_bytes_pruned": 5 * 10 * 1024 })
    );
    let on_disk: Vec<String> = listing(&dir)
        .into_iter()
        .filter(|n| n.starts_with("img"))
        .collect();
    assert_eq!(
        on_disk,
        ids[..10].to_vec(),
        "the five least recently read (img14 .. img10) went"
    );
    let total: u64 = on_disk
        .iter()
        .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
        .sum();
    assert!(total <= 100 * 1024);

    assert_eq!(
        json(server.manage(Method::POST, "/v2/cache/prune").await).await,
        serde_json::json!({ "total_files_pruned": 0, "total_bytes_pruned": 0 })
    );
}

#[tokio::test]
async fn prune_of_an_empty_cache_and_to_zero() {
    let server = managed().await;
    assert_eq!(
        json(server.manage(Method::POST, "/v2/cache/prune").await).await,
        serde_json::json!({ "total_files_pruned": 0, "total_bytes_pruned": 0 })
    );

    let zero = TestServer::start_managed(|dir| {
        let cache = ImageCache::open(CacheConfig::new(dir)).unwrap();
        let mut fill = cache.begin_fill(&id("img"), Expected::default()).unwrap();
        fill.write(b"bytes").unwrap();
        fill.finish().unwrap();
        drop(cache);
        ImageCache::open(CacheConfig::new(dir).image_cache_max_size(0)).unwrap()
    })
    .await;
    assert_eq!(
        json(zero.manage(Method::POST, "/v2/cache/prune").await).await,
        serde_json::json!({ "total_files_pruned": 1, "total_bytes_pruned": 5 })
    );
    assert!(zero.cache.cached_images().is_empty());
}

#[tokio::test]
async fn the_size_limit_holds_without_a_prune_call() {
    let server = TestServer::start_managed(|dir| {
        ImageCache::open(CacheConfig::new(dir).image_cache_max_size(100 * 1024)).unwrap()
    })
    .await;
    for n in 0..15 {
        let image = format!("img{n:02}");
        server
            .api
            .add(&image, FakeImage::private(image_data(10 * 1024)));
        download(&server, &image).await;
    }
    eventually("the cache is back under its limit", || {
        server.cache.size() <= 100 * 1024
    })
    .await;
    let left: Vec<String> = listing(&server.cache_dir())
        .into_iter()
        .filter(|n| n.starts_with("img"))
        .collect();
    assert!(left.len() <= 10, "{left:?}");
    assert!(
        left.contains(&"img14".to_owned()),
        "the most recent stays: {left:?}"
    );
    assert!(
        !left.contains(&"img00".to_owned()),
        "the least recently accessed went first: {left:?}"
    );

    // Larger than the whole cache: streamed to the client, not cached.
    server
        .api
        .add("huge", FakeImage::private(image_data(200 * 1024)));
    let huge = server.get("huge", OWNER).await;
    assert_eq!(huge.bytes().await.unwrap().len(), 200 * 1024);
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&id("huge")));
    assert!(listing(&server.cache_dir().join("incomplete")).is_empty());
}

#[tokio::test]
async fn only_admins_manage_and_requests_are_checked_in_order() {
    let server = managed().await;
    // An image the owner can see: their queue or delete is refused by the policy.
    server.api.add("img", FakeImage::private(image_data(100)));
    let routes = [
        (Method::GET, "/v2/cache"),
        (Method::DELETE, "/v2/cache"),
        (Method::PUT, "/v2/cache/img"),
        (Method::DELETE, "/v2/cache/img"),
        (Method::POST, "/v2/cache/clean"),
        (Method::POST, "/v2/cache/prune"),
        (Method::POST, "/v2/cache/prefetch"),
        (Method::GET, "/v2/cache/nodes/img"),
        (Method::GET, "/v2/cached_images"),
        (Method::DELETE, "/v2/cached_images"),
        (Method::DELETE, "/v2/cached_images/img"),
        (Method::GET, "/v2/queued_images"),
        (Method::DELETE, "/v2/queued_images"),
        (Method::PUT, "/v2/queued_images/img"),
        (Method::DELETE, "/v2/queued_images/img"),
        (Method::GET, "/cached-images"),
        (Method::DELETE, "/cached-images/img"),
        (Method::PUT, "/queued/img"),
        // Bad ids and wrong methods are still 403 for a non-admin: policy first.
        (Method::DELETE, "/v2/cache/a%2Fb"),
        (Method::PATCH, "/v2/cache"),
    ];
    for (method, path) in &routes {
        for token in [OWNER, "", "forged"] {
            let response = server.manage_as(method.clone(), path, token).await;
            assert_eq!(response.status(), 403, "{method} {path} as {token:?}");
            assert_eq!(
                response.headers()["content-type"],
                "text/html; charset=UTF-8"
            );
            let page = response.text().await.unwrap();
            assert!(
                page.contains("You are not authorized to complete"),
                "{page}"
            );
        }
    }
    // As Glance, an image is looked up as the caller before the policy: one the caller cannot
    // see is "not found" to them, whether the cache holds it or not (no existence oracle).
    server
        .api
        .add("hidden", FakeImage::private(image_data(100)));
    for method in [Method::PUT, Method::DELETE] {
        let response = server
            .manage_as(method.clone(), "/v2/cache/hidden", OTHER)
            .await;
        assert_eq!(response.status(), 404, "{method}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("Image hidden not found."));
    }
    let before = server
        .manage_as(Method::DELETE, "/v2/cache/hidden", OTHER)
        .await;
    let (status, before) = (before.status(), before.text().await.unwrap());
    download(&server, "hidden").await;
    let response = server
        .manage_as(Method::DELETE, "/v2/cache/hidden", OTHER)
        .await;
    assert_eq!(response.status(), status, "the same refusal, held or not");
    assert_eq!(response.text().await.unwrap(), before);
    assert!(server.cache.is_cached(&ImageId::new("hidden").unwrap()));

    let bad_header = clear_as(&server, OWNER, "bogus").await;
    assert_eq!(bad_header.status(), 403);
    assert!(server.cache.queued_images().unwrap().is_empty());

    for (method, path, allow) in [
        (Method::POST, "/v2/cache", "GET, DELETE"),
        (Method::GET, "/v2/cache/img", "DELETE, PUT"),
        (Method::GET, "/v2/cache/clean", "POST"),
        (Method::DELETE, "/v2/cache/prune", "POST"),
        (Method::PUT, "/v2/cached_images", "GET, DELETE"),
        (Method::GET, "/v2/queued_images/img", "DELETE, PUT"),
    ] {
        let response = server.manage(method.clone(), path).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }

    for target in [
        "/v2/cache/a%2Fb",
        "/v2/cache/%2e%2e",
        "/v2/cached_images/a%5Cb",
        "/queued/%00",
    ] {
        assert_eq!(
            raw_status(server.addr, "DELETE", target, ADMIN).await,
            400,
            "{target}"
        );
    }
    let with_body = server
        .client
        .put(server.url("/v2/cache/img"))
        .header("x-auth-token", ADMIN)
        .body("unexpected")
        .send()
        .await
        .unwrap();
    assert_eq!(with_body.status(), 400);
    assert_eq!(
        server
            .manage(Method::GET, "/v2/cache/nodes/img")
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn a_failed_prefetch_stays_queued_and_the_rest_are_fetched() {
    let server = managed().await;
    server.api.add(
        "bad-checksum",
        FakeImage::private(image_data(50_000)).behavior(Behavior::WrongChecksum),
    );
    server.api.add(
        "server-error",
        FakeImage::private(image_data(50_000)).behavior(Behavior::ServerError),
    );
    server
        .api
        .add("good", FakeImage::private(image_data(50_000)));
    for image in ["bad-checksum", "server-error", "good"] {
        assert_eq!(
            server
                .manage(Method::PUT, &format!("/v2/cache/{image}"))
                .await
                .status(),
            202
        );
    }
    eventually("the good image is cached", || {
        server.cache.is_cached(&id("good"))
    })
    .await;
    eventually("only the failures stay queued", || {
        server.cache.queued_images().unwrap() == [id("bad-checksum"), id("server-error")]
    })
    .await;
    assert!(!server.cache.is_cached(&id("bad-checksum")));
    assert!(!server.cache.is_cached(&id("server-error")));

    // The next run (here asked for explicitly) tries them again, and the worker is alive.
    let before = server.api.body_requests();
    assert_eq!(
        server
            .manage(Method::POST, "/v2/cache/prefetch")
            .await
            .status(),
        202
    );
    eventually("the failed image was tried again", || {
        server.api.body_requests() > before
    })
    .await;
}

#[tokio::test]
async fn nodes_come_from_the_central_database() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite:///{}",
        db_dir.path().join("glance.sqlite").display()
    );
    let url = DatabaseUrl::parse(&url).unwrap();
    let server = TestServer::start_managed(|dir| {
        let config = CacheConfig::new(dir)
            .worker_self_reference_url("http://node-a:9292")
            .centralized_db(url);
        ImageCache::open(config).unwrap()
    })
    .await;
    server.api.add("img", FakeImage::private(image_data(10)));
    let nodes = server.manage(Method::GET, "/v2/cache/nodes/img").await;
    assert_eq!(nodes.status(), 200);
    assert_eq!(json(nodes).await, serde_json::json!([]));

    download(&server, "img").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let nodes = json(server.manage(Method::GET, "/v2/cache/nodes/img").await).await;
        if nodes == serde_json::json!(["http://node-a:9292"]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed: {nodes}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // As Glance: an image the API does not know is 404, and a body is refused.
    let unknown = server.manage(Method::GET, "/v2/cache/nodes/nope").await;
    assert_eq!(unknown.status(), 404);
    let with_body = server
        .client
        .get(server.url("/v2/cache/nodes/img"))
        .header("x-auth-token", ADMIN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(with_body.status(), 400);
}

/// A caller's 404 for a cached image makes the node ask with its own identity: an image only
/// hidden from that caller stays; one the API no longer knows is evicted at once.
#[tokio::test]
async fn a_404_for_a_cached_image_evicts_it_only_when_the_api_lost_it() {
    let server = managed().await;
    server.api.add("img", FakeImage::private(image_data(1000)));
    download(&server, "img").await;
    assert!(server.cache.is_cached(&id("img")));

    // Another project's caller is told 404 (the image is private): the copy stays.
    assert_eq!(server.get("img", OTHER).await.status(), 404);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(server.cache.is_cached(&id("img")));
    assert_eq!(cache_status(&server.get("img", OWNER).await), "HIT");

    // Deleted behind the node's back (another node, or Glance itself): the owner's 404 evicts.
    server.api.update("img", |image| image.deleted = true);
    assert_eq!(server.get("img", OWNER).await.status(), 404);
    // The record goes first, then the file: wait for both.
    eventually("the deleted image is evicted, record and file", || {
        !server.cache.is_cached(&id("img")) && !server.cache_dir().join("img").exists()
    })
    .await;
}

#[tokio::test]
async fn nodes_is_a_conflict_without_the_central_database() {
    let server = TestServer::start_managed(|dir| {
        ImageCache::open(CacheConfig::new(dir).worker_self_reference_url("http://node-a:9292"))
            .unwrap()
    })
    .await;
    server.api.add("img", FakeImage::private(image_data(10)));
    download(&server, "img").await;
    let nodes = server.manage(Method::GET, "/v2/cache/nodes/img").await;
    assert_eq!(nodes.status(), 409);
    let text = nodes.text().await.unwrap();
    assert!(
        text.contains("Centralized caching is not enabled"),
        "{text}"
    );
}

#[tokio::test]
async fn fills_in_progress_are_listed() {
    let server = managed().await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    server.api.add(
        "slow",
        FakeImage::private(image_data(1024 * 1024)).behavior(Behavior::Gated(gate.clone())),
    );
    // The upstream sends one chunk and waits: the fill has written it (the client, kept one
    // chunk behind until verification, has nothing yet).
    let mut download = server.get("slow", OWNER).await;
    eventually("the first chunk is written", || {
        server
            .cache
            .fills_in_progress()
            .first()
            .is_some_and(|f| f.bytes_written > 0)
    })
    .await;
    let plain = json(server.manage(Method::GET, "/v2/cache").await).await;
    assert!(plain.get("in_progress").is_none(), "{plain}");
    let listing = json(
        server
            .manage(Method::GET, "/v2/cache?in_progress=true")
            .await,
    )
    .await;
    let progress = &listing["in_progress"][0];
    assert_eq!(progress["image_id"], "slow");
    assert_eq!(progress["expected_size"], 1024 * 1024);
    assert!(progress["bytes_written"].as_u64().unwrap() > 0);
    gate.add_permits(100);
    while download.chunk().await.unwrap().is_some() {}
}

/// An image API whose download of `boom` panics; every other id is a small active image.
#[derive(Clone)]
struct PanickyApi {
    downloads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tower::Service<axum::http::Request<axum::body::Body>> for PanickyApi {
    type Response = axum::http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<axum::body::Body>) -> Self::Future {
        let path = request.uri().path();
        let body = if path.ends_with("/file") {
            assert!(!path.contains("boom"), "the backend store crashed");
            self.downloads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::body::Body::from(vec![7u8; 1000])
        } else {
            axum::body::Body::from(r#"{"status": "active"}"#)
        };
        std::future::ready(Ok(axum::http::Response::new(body)))
    }
}

type InProcess = tower_image_cache::manage::CacheManageService<
    tower_image_cache::CacheService<PanickyApi, tower_image_cache::TrustAll>,
>;

/// Both layers around `PanickyApi`, in process, and its download counter.
fn in_process(
    cache: &ImageCache,
    layer: tower_image_cache::CacheManageLayer,
) -> (InProcess, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let downloads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(tower_image_cache::CacheLayer::new(
            cache.clone(),
            tower_image_cache::TrustAll,
        ))
        .service(PanickyApi {
            downloads: downloads.clone(),
        });
    (service, downloads)
}

fn admin_request(method: Method, path: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .method(method.as_str())
        .uri(path)
        .header("x-auth-token", ADMIN)
        .body(axum::body::Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_panicking_fetch_does_not_stop_the_prefetcher() {
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let layer = tower_image_cache::CacheManageLayer::new(
        cache.clone(),
        tower_image_cache::manage::StaticToken::new(ADMIN),
    );
    let (service, _) = in_process(&cache, layer);
    for image in ["boom", "fine"] {
        let response = service
            .clone()
            .oneshot(admin_request(Method::PUT, &format!("/v2/cache/{image}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    eventually("the image after the panic is cached", || {
        cache.is_cached(&id("fine"))
    })
    .await;
    eventually("the panicked one stays queued", || {
        cache.queued_images().unwrap() == [id("boom")]
    })
    .await;

    cache.queue_image(&id("after")).unwrap();
    let response = service
        .clone()
        .oneshot(admin_request(Method::POST, "/v2/cache/prefetch"))
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eventually("the worker still fetches", || cache.is_cached(&id("after"))).await;
}

#[tokio::test]
async fn the_prefetcher_stops_on_shutdown_and_when_the_service_is_dropped() {
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let layer = tower_image_cache::CacheManageLayer::new(
        cache.clone(),
        tower_image_cache::manage::StaticToken::new(ADMIN),
    );
    let handle = layer.prefetch_handle();
    let (service, downloads) = in_process(&cache, layer.clone());
    // The first call starts the worker; the worker holds a clone of the wrapped API.
    service
        .clone()
        .oneshot(admin_request(Method::GET, "/v2/cache"))
        .await
        .unwrap();
    let held = std::sync::Arc::strong_count(&downloads);
    assert!(held >= 2, "the worker holds the API");
    drop(service);
    eventually("the worker let go of the API", || {
        std::sync::Arc::strong_count(&downloads) == 1
    })
    .await;

    // An explicit shutdown: a queued image is no longer fetched.
    let (service, downloads) = in_process(&cache, layer);
    service
        .clone()
        .oneshot(admin_request(Method::GET, "/v2/cache"))
        .await
        .unwrap();
    handle.shutdown();
    let queued = service
        .clone()
        .oneshot(admin_request(Method::PUT, "/v2/cache/late"))
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(downloads.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(cache.queued_images().unwrap(), [id("late")]);
}

#[tokio::test]
async fn timers_prune_and_clean_without_cron() {
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    {
        let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
        let mut fill = cache.begin_fill(&id("img"), Expected::default()).unwrap();
        fill.write(b"bytes").unwrap();
        fill.finish().unwrap();
    }
    // Reopened under a smaller limit: nothing commits, so only the timer can prune.
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(0)).unwrap();
    std::fs::write(dir.path().join("invalid/leftover"), b"x").unwrap();
    let layer = tower_image_cache::CacheManageLayer::new(
        cache.clone(),
        tower_image_cache::manage::StaticToken::new(ADMIN),
    )
    .clean_every(std::time::Duration::from_millis(20))
    .prune_every(std::time::Duration::from_millis(20));
    let (service, _) = in_process(&cache, layer);
    // The worker runs as long as the service lives.
    let first = service
        .clone()
        .oneshot(admin_request(Method::GET, "/v2/cache"));
    first.await.unwrap();
    eventually("the cleaner ran", || {
        !dir.path().join("invalid/leftover").exists()
    })
    .await;
    drop(service);
}

#[tokio::test]
async fn an_image_larger_than_the_cache_is_never_queued_nor_read_again_and_again() {
    let server = TestServer::start_managed(|dir| {
        ImageCache::open(CacheConfig::new(dir).image_cache_max_size(10_000)).unwrap()
    })
    .await;
    server
        .api
        .add("big", FakeImage::private(image_data(50_000)));
    for path in ["/v2/cache/big", "/v2/queued_images/big"] {
        let refused = server.manage(Method::PUT, path).await;
        assert_eq!(refused.status(), 400, "{path}");
        let text = refused.text().await.unwrap();
        assert!(text.contains("larger than the whole cache"), "{text}");
    }
    assert!(server.cache.queued_images().unwrap().is_empty());

    // Queued some other way (an older version, the store's API): the prefetcher looks at the
    // answer's length, reads no body, and takes it off the queue.
    server
        .cache
        .queue_image(&ImageId::new("big").unwrap())
        .unwrap();
    server.manage(Method::POST, "/v2/cache/prefetch").await;
    eventually("the oversized image leaves the queue", || {
        server.cache.queued_images().unwrap().is_empty()
    })
    .await;
    let reads = server.api.body_requests();
    assert!(reads <= 1, "{reads} reads");
    // A range miss of it is answered, and does not queue it either.
    let range = server
        .client
        .get(server.url("/v2/images/big/file"))
        .header("x-auth-token", ADMIN)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert!(server.cache.queued_images().unwrap().is_empty());
    // Queueing something else does not bring it back.
    server
        .api
        .add("small", FakeImage::private(image_data(1000)));
    assert_eq!(
        server.manage(Method::PUT, "/v2/cache/small").await.status(),
        202
    );
    eventually("the small image is cached", || {
        server.cache.is_cached(&ImageId::new("small").unwrap())
    })
    .await;
    assert_eq!(server.api.body_requests(), reads + 1);
}

#[tokio::test]
async fn the_layers_own_requests_are_given_up_at_the_response_timeout() {
    use axum::routing::get;
    use tower::Layer;
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    // An image API whose metadata route never answers.
    let api = axum::Router::new().route(
        "/v2/images/{id}",
        get(|| async {
            std::future::pending::<()>().await;
            ""
        }),
    );
    let manage = tower_image_cache::manage::CacheManageLayer::new(
        cache,
        tower_image_cache::manage::StaticToken::new(ADMIN),
    )
    .service_token(ADMIN)
    .upstream_response_timeout(Some(std::time::Duration::from_millis(300)));
    let app = axum::Router::new().fallback_service(manage.layer(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .put(format!("http://{addr}/v2/cache/img"))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("did not answer within 0.3 s"));
}
