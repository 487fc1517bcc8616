//! The cache server (`image-cache-server`) in front of the example image server, both spawned.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::example::{get_as, start, start_proxy, upload};

const ADMIN: &str = "admin-secret";

async fn body_of(response: reqwest::Response) -> (u16, Vec<u8>) {
    (
        response.status().as_u16(),
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test]
async fn a_cache_node_in_front_of_an_image_api() {
    let (upstream_dir, proxy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = start(upstream_dir.path(), &["--no-cache"]);
    let proxy = start_proxy(&upstream.url, proxy_dir.path());
    let client = reqwest::Client::new();

    // Uploads pass through (streamed), as do metadata and listings, unchanged.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let id = upload(&client, &proxy.url, ADMIN, "private", &data).await;
    for path in [
        format!("/v2/images/{id}"),
        "/v2/images".to_owned(),
        "/versions".to_owned(),
    ] {
        let direct =
            body_of(get_as(&client, &format!("{}{path}", upstream.url), ADMIN).await).await;
        let proxied = body_of(get_as(&client, &format!("{}{path}", proxy.url), ADMIN).await).await;
        assert_eq!(proxied, direct, "{path}");
    }
    let refused = client
        .post(format!("{}/v2/images", proxy.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the upstream's own answer");

    let download = || {
        client
            .get(format!("{}/v2/images/{id}/file", proxy.url))
            .header("x-auth-token", ADMIN)
            .send()
    };
    let miss = download().await.unwrap();
    assert_eq!(miss.headers()["x-cache-status"], "MISS");
    assert_eq!(miss.bytes().await.unwrap(), data);
    let committed = proxy_dir.path().join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !committed.exists() {
        assert!(Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = download().await.unwrap();
    assert_eq!(hit.headers()["x-cache-status"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);

    // The upstream still decides who may read: another project and no token are refused.
    let other = get_as(&client, &format!("{}/v2/images/{id}/file", proxy.url), "u1").await;
    assert_eq!(other.status(), 404);
    let anonymous = client
        .get(format!("{}/v2/images/{id}/file", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let listing = get_as(&client, &format!("{}/v2/cache", proxy.url), ADMIN).await;
    assert_eq!(listing.status(), 200);
    let listing: serde_json::Value =
        serde_json::from_slice(&listing.bytes().await.unwrap()).unwrap();
    assert_eq!(listing["cached_images"][0]["image_id"], id.as_str());

    // The upstream gone: a clear 503 with Retry-After, even for a cached image (its access
    // cannot be checked, and no decision is remembered without authorization_stale_if_error).
    drop(upstream);
    let gone = client
        .get(format!("{}/v2/images/{id}/file", proxy.url))
        .header("x-auth-token", ADMIN)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 503);
    assert_eq!(gone.headers()["retry-after"], "5");
    let reason: serde_json::Value = serde_json::from_slice(&gone.bytes().await.unwrap()).unwrap();
    let message = reason["message"].as_str().unwrap();
    assert!(message.contains("cannot check access"), "{reason}");
    // Another route: a 502 saying what failed, without the node's internal address or the
    // socket error (those are the operator's, in the log).
    let listing = get_as(&client, &format!("{}/v2/images", proxy.url), ADMIN).await;
    assert_eq!(listing.status(), 502);
    let reason: serde_json::Value =
        serde_json::from_slice(&listing.bytes().await.unwrap()).unwrap();
    let message = reason["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "The image API behind this node could not be reached (the connection was refused). Try \
         again later."
    );
    assert!(!message.contains("127.0.0.1"), "{reason}");
    // What the operator's alert reads.
    let metrics = reqwest::get(format!("{}/metrics", proxy.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        common::metric(
            &metrics,
            "image_cache_upstream_errors_total{kind=\"connect\"}"
        ) >= 1,
        "{metrics}"
    );
}
