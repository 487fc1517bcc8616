//! A burst of misses against a throttled image store, half of whose clients never read: the
//! node's hits, management routes and metrics keep answering within a second, and its
//! threads stay bounded (no fill holds a thread while it waits on its upstream or its client).

mod common;

use std::time::{Duration, Instant};

use common::example::{start, upload, wait_listed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ADMIN: &str = "admin-secret";

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_misses_on_a_throttled_store_leave_the_node_responsive() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB/s in all: 600 images of 256 KiB take about 20 s to send.
    let server = start(dir.path(), &["--backend-rate", "8MiB"]);
    let client = reqwest::Client::new();
    let data = common::image_data(256 * 1024);
    let hit = upload(&client, &server.url, ADMIN, "public", &data).await;
    let cached = client
        .get(format!("{}/v2/images/{hit}/file", server.url))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.bytes().await.unwrap(), data);
    wait_listed(&server.url, ADMIN, &hit, Duration::from_secs(30), "the hit").await;

    let mut ids = Vec::new();
    for chunk in 0..30 {
        let uploads: Vec<_> = (0..20)
            .map(|_| {
                let (client, url, data) = (client.clone(), server.url.clone(), data.clone());
                tokio::spawn(async move { upload(&client, &url, ADMIN, "public", &data).await })
            })
            .collect();
        for upload in uploads {
            ids.push(upload.await.unwrap());
        }
        let _ = chunk;
    }
    let addr = server.url.trim_start_matches("http://").to_owned();
    let before = threads_of(server.pid());

    // 600 misses at once: the odd ones read, the even ones send their request and never read.
    let mut readers = Vec::new();
    let mut stuck = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let request = format!(
                "GET /v2/images/{id}/file HTTP/1.1\r\nHost: node\r\nX-Auth-Token: {ADMIN}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            stuck.push(stream);
        } else {
            let (client, url) = (
                client.clone(),
                format!("{}/v2/images/{id}/file", server.url),
            );
            readers.push(tokio::spawn(async move {
                let response = client.get(url).header("x-auth-token", ADMIN).send().await?;
                response.bytes().await
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // While they all wait on the store: the node answers at once.
    let mut peak_threads = 0;
    for round in 0..5 {
        for (what, url) in [
            ("/metrics", format!("{}/metrics", server.url)),
            ("GET /v2/cache", format!("{}/v2/cache", server.url)),
            ("a hit", format!("{}/v2/images/{hit}/file", server.url)),
        ] {
            let started = Instant::now();
            let response = client
                .get(&url)
                .header("x-auth-token", ADMIN)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap_or_else(|err| panic!("{what} failed in round {round}: {err}"));
            assert!(
                response.status().is_success(),
                "{what}: {}",
                response.status()
            );
            response.bytes().await.unwrap();
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "{what} took {took:?} in round {round}"
            );
        }
        peak_threads = peak_threads.max(threads_of(server.pid()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Bounded: far below one thread per fill or per download (300 + 300 here).
    assert!(
        peak_threads < before + 100,
        "{peak_threads} threads while 600 misses waited (from {before})"
    );
    drop(stuck);
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_fills_waiting_on_their_upstream_hold_no_threads() {
    use std::sync::Arc;
    let server = Arc::new(
        common::TestServer::start_with_layer(
            |dir| {
                tower_image_cache::ImageCache::open(tower_image_cache::CacheConfig::new(dir))
                    .unwrap()
            },
            tower_image_cache::InnerMetadata::new(),
            |layer| layer.max_concurrent_fills(1000),
        )
        .await,
    );
    let data = common::image_data(200_000);
    server
        .api
        .add("hit", common::FakeImage::private(data.clone()));
    assert_eq!(
        server
            .get("hit", common::OWNER)
            .await
            .bytes()
            .await
            .unwrap(),
        data
    );
    server.cache.idle().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    for i in 0..600 {
        server.api.add(
            &format!("img{i}"),
            common::FakeImage::private(data.clone())
                .behavior(common::Behavior::Gated(gate.clone())),
        );
    }
    let before = threads_of(std::process::id());
    let mut downloads = Vec::new();
    for i in 0..600 {
        let server = Arc::clone(&server);
        downloads.push(tokio::spawn(async move {
            let response = server.get(&format!("img{i}"), common::OWNER).await;
            assert_eq!(common::cache_status(&response), "MISS");
            response.bytes().await
        }));
    }
    // Every fill has begun and waits at the gate.
    common::eventually("600 fills running", || {
        server.cache.fills_in_progress().len() == 600
    })
    .await;
    let during = threads_of(std::process::id());
    assert!(
        during < before + 50,
        "{during} threads with 600 fills waiting (from {before}): fills hold threads"
    );
    let started = Instant::now();
    assert_eq!(
        server
            .get("hit", common::OWNER)
            .await
            .bytes()
            .await
            .unwrap(),
        data
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    gate.add_permits(1_000_000);
    for download in downloads {
        assert_eq!(download.await.unwrap().unwrap(), data);
    }
    server.cache.idle().await;
    assert_eq!(server.cache.cached_images().len(), 601);
}
