//! The wiring examples (a plain hyper server, an axum app with state of its own) run as a user
//! runs them: a download goes MISS then HIT, and a queued image is prefetched.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::example::{start_example, Server};

const TOKEN: &str = "admin-secret";

fn start(name: &str, cache_dir: &Path) -> Server {
    start_example(
        name,
        &[
            OsStr::new("--bind"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--cache-dir"),
            cache_dir.as_os_str(),
            OsStr::new("--admin-token"),
            OsStr::new(TOKEN),
        ],
    )
}

async fn download(client: &reqwest::Client, url: &str) -> (String, bytes::Bytes) {
    let response = client
        .get(url)
        .header("x-auth-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let status = response.headers()["x-cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, response.bytes().await.unwrap())
}

/// MISS then HIT with the same bytes, and `PUT /v2/cache/{queued}` prefetches.
async fn caches(server: &Server, cache_dir: &Path, image: &str, queued: &str) {
    let client = reqwest::Client::new();
    let url = format!("{}/v2/images/{image}/file", server.url);
    let (first, bytes) = download(&client, &url).await;
    assert_eq!(first, "MISS");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache_dir.join(image).exists() {
        assert!(Instant::now() < deadline, "{image} was not committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (second, again) = download(&client, &url).await;
    assert_eq!((second.as_str(), again), ("HIT", bytes));

    let queue = client
        .put(format!("{}/v2/cache/{queued}", server.url))
        .header("x-auth-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 202);
    while !cache_dir.join(queued).exists() {
        assert!(Instant::now() < deadline, "{queued} was not prefetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_hyper_example_caches_and_prefetches() {
    let dir = tempfile::tempdir().unwrap();
    let server = start("hyper_server", dir.path());
    caches(&server, dir.path(), "demo", "small").await;
    assert_eq!(
        std::fs::metadata(dir.path().join("demo")).unwrap().len(),
        4 << 20
    );
}

#[tokio::test]
async fn the_axum_app_with_state_caches_and_prefetches() {
    let dir = tempfile::tempdir().unwrap();
    let server = start("axum_app", dir.path());
    let client = reqwest::Client::new();
    for (id, data) in [("demo", vec![9u8; 1 << 20]), ("other", vec![1u8; 1000])] {
        let put = client
            .put(format!("{}/v2/images/{id}/file", server.url))
            .header("x-auth-token", TOKEN)
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
    }
    caches(&server, dir.path(), "demo", "other").await;
}

/// A wiring example joins a fleet by its configuration file alone: `centralized_db` on an SQLite
/// file, and the nodes route answers from it.
#[cfg(feature = "centralized-db")]
#[tokio::test]
async fn the_hyper_example_joins_a_fleet_by_its_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let config = dir.path().join("glance-api.conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_driver = centralized_db\n\
             worker_self_reference_url = http://hyper-node:9494\n\n[database]\n\
             connection = sqlite:///{}\n",
            cache_dir.display(),
            dir.path().join("glance.sqlite").display()
        ),
    )
    .unwrap();
    let server = start_example(
        "hyper_server",
        &[
            OsStr::new("--bind"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--config-file"),
            config.as_os_str(),
            OsStr::new("--admin-token"),
            OsStr::new(TOKEN),
        ],
    );
    caches(&server, &cache_dir, "demo", "small").await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: serde_json::Value = client
            .get(format!("{}/v2/cache/nodes/demo", server.url))
            .header("x-auth-token", TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if nodes == serde_json::json!(["http://hyper-node:9494"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node was never listed: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
