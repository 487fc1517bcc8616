//! Ranges and conditionals answered from the cache file, over a real socket; the wrapped
//! service's body requests are counted to prove the bytes come from the file.

mod common;

use common::*;
use reqwest::Method;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

const SIZE: usize = 3 * 1024 * 1024 + 100;

async fn cached_server() -> (TestServer, bytes::Bytes) {
    let server = TestServer::start().await;
    let data = image_data(SIZE);
    server.api.add("img", FakeImage::private(data.clone()));
    server.get("img", OWNER).await.bytes().await.unwrap();
    server.cache.idle().await;
    assert!(server.cache.is_cached(&ImageId::new("img").unwrap()));
    (server, data)
}

async fn ranged(
    server: &TestServer,
    method: Method,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.url("/v2/images/img/file"))
        .header("x-auth-token", OWNER);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_single_range_form_is_served_from_the_file() {
    let (server, data) = cached_server().await;
    let size = SIZE as u64;
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1048570-2097160", 1_048_570, 2_097_160),
        ("bytes=3000000-", 3_000_000, size - 1),
        ("bytes=-500", size - 500, size - 1),
        ("bytes=100-99999999", 100, size - 1),
    ] {
        let response = ranged(&server, Method::GET, &[("range", range)]).await;
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(cache_status(&response), "HIT");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{end}/{size}").as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()["content-length"],
            (end - start + 1).to_string().as_str(),
            "{range}"
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            data.slice(start as usize..=end as usize),
            "{range}"
        );
    }
    assert_eq!(
        server.api.body_requests(),
        1,
        "every range came from the file"
    );
    assert_eq!(
        server
            .cache
            .cached_image(&ImageId::new("img").unwrap())
            .unwrap()
            .hits,
        5,
        "each whole range counts"
    );
}

#[tokio::test]
async fn unsatisfiable_malformed_and_multiple_ranges() {
    let (server, data) = cached_server().await;
    let unsatisfiable = ranged(
        &server,
        Method::GET,
        &[("range", &format!("bytes={SIZE}-"))],
    )
    .await;
    assert_eq!(unsatisfiable.status(), 416);
    assert_eq!(
        unsatisfiable.headers()["content-range"],
        format!("bytes */{SIZE}").as_str()
    );
    assert!(unsatisfiable.bytes().await.unwrap().is_empty());

    for range in ["bytes=9-3", "bytes=abc", "lines=0-1", "bytes=0-1,10-20"] {
        let whole = ranged(&server, Method::GET, &[("range", range)]).await;
        assert_eq!(whole.status(), 200, "{range}");
        assert_eq!(cache_status(&whole), "HIT");
        assert_eq!(whole.bytes().await.unwrap(), data, "{range}");
    }
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test]
async fn if_range_and_if_none_match_use_the_checksum_etag() {
    let (server, data) = cached_server().await;
    let etag = format!("\"{}\"", md5_hex(&data));

    let matching = ranged(
        &server,
        Method::GET,
        &[("range", "bytes=0-9"), ("if-range", &etag)],
    )
    .await;
    assert_eq!(matching.status(), 206);
    assert_eq!(matching.bytes().await.unwrap(), data.slice(0..10));
    let stale = ranged(
        &server,
        Method::GET,
        &[("range", "bytes=0-9"), ("if-range", "\"0123\"")],
    )
    .await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap(), data);

    let not_modified = ranged(&server, Method::GET, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let modified = ranged(&server, Method::GET, &[("if-none-match", "\"0123\"")]).await;
    assert_eq!(modified.status(), 200);
    assert_eq!(modified.bytes().await.unwrap(), data);
    assert_eq!(server.api.body_requests(), 1);
}

#[tokio::test]
async fn head_mirrors_get_headers() {
    let (server, _) = cached_server().await;
    for headers in [
        vec![],
        vec![("range", "bytes=10-19")],
        vec![("range", "bytes=999999999-")],
    ] {
        let get = ranged(&server, Method::GET, &headers).await;
        let head = ranged(&server, Method::HEAD, &headers).await;
        assert_eq!(head.status(), get.status(), "{headers:?}");
        assert!(get.headers().contains_key("etag"), "a hit carries its ETag");
        for name in [
            "content-length",
            "content-range",
            "etag",
            "accept-ranges",
            "content-md5",
            "x-cache-status",
        ] {
            assert_eq!(
                head.headers().get(name),
                get.headers().get(name),
                "{name} for {headers:?}"
            );
        }
        assert!(head.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_caller_the_api_refuses_gets_no_range_either() {
    let (server, _) = cached_server().await;
    let response = server
        .client
        .get(server.url("/v2/images/img/file"))
        .header("x-auth-token", OTHER)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_range_miss_is_answered_upstream_then_the_image_is_prefetched() {
    let server =
        TestServer::start_managed(|dir| ImageCache::open(CacheConfig::new(dir)).unwrap()).await;
    let data = image_data(500_000);
    server.api.add("img", FakeImage::private(data.clone()));
    let response = ranged(&server, Method::GET, &[("range", "bytes=10-19")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(cache_status(&response), "MISS");
    assert_eq!(response.bytes().await.unwrap(), data.slice(10..20));

    let id = ImageId::new("img").unwrap();
    eventually("the image is prefetched", || server.cache.is_cached(&id)).await;
    let hit = ranged(&server, Method::GET, &[("range", "bytes=10-19")]).await;
    assert_eq!(hit.status(), 206);
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data.slice(10..20));
    assert_eq!(
        server.api.body_requests(),
        2,
        "the range miss and the prefetch"
    );
}
