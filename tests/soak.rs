//! The soak: 1000 concurrent connections for 60 s against the example server with the cache,
//! mixing hits, misses, ranges, HEADs, cache deletes and management calls. Not run in CI:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_SECS` and `SOAK_CONNS` change the duration and the number of connections. It reports
//! the requests by kind, every error (the goal is none), and the server's open file descriptors
//! and resident memory at the start, at the peak, at the end and 30 s later, and fails on any
//! error, on descriptors that did not come back, or on resident memory that is not back within
//! 64 MiB of where it started 30 s after the load (no environment settings: the server runs
//! with glibc's defaults).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::example::{rss_of, start, upload, Server};
use md5::Digest;

const ADMIN: &str = "admin-secret";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap())
}

fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count()
}

fn max_open_files() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Tally {
    done: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
}

struct Image {
    id: String,
    data: Vec<u8>,
    md5: String,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a 60 s soak with 1000 connections: run it on purpose (see the file's doc)"]
async fn a_thousand_connections_for_a_minute() {
    let secs = env_or("SOAK_SECS", 60);
    let conns = env_or("SOAK_CONNS", 1000);
    assert!(
        max_open_files() > conns * 2 + 200,
        "the soak needs more than {} open files here: raise the limit (ulimit -n 8192)",
        conns * 2 + 200
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let setup = reqwest::Client::new();
    let mut images = Vec::new();
    for i in 0..24u32 {
        let len = 64 * 1024 + (i as usize) * 350_000;
        let data: Vec<u8> = (0..len as u32)
            .map(|b| (b.wrapping_mul(i + 7) % 251) as u8)
            .collect();
        let id = upload(&setup, &server.url, ADMIN, "public", &data).await;
        let md5 = hex::encode(md5::Md5::digest(&data));
        images.push(Image { id, data, md5 });
    }
    let images = Arc::new(images);
    // Warm: half the images cached, so the mix has hits from the start.
    for image in images.iter().step_by(2) {
        let url = format!("{}/v2/images/{}/file", server.url, image.id);
        let body = setup
            .get(url)
            .header("x-auth-token", ADMIN)
            .send()
            .await
            .unwrap();
        body.bytes().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds_start, rss_start) = (open_fds(&server), server.rss());

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_start));
    let sampler = {
        let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak), server.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..conns {
        let (images, tally, stop) = (Arc::clone(&images), Arc::clone(&tally), Arc::clone(&stop));
        let base = server.url.clone();
        tasks.push(tokio::spawn(async move {
            // One client each: its own connection, kept alive between requests.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap();
            let mut n = worker.wrapping_mul(2_654_435_761);
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let image = &images[(n >> 33) as usize % images.len()];
                let result = one_request(&client, &base, image, (n >> 20) % 100).await;
                let mut tally = tally.lock().unwrap();
                match result {
                    Ok(kind) => *tally.done.entry(kind).or_default() += 1,
                    Err(err) => *tally.errors.entry(err).or_default() += 1,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    // Let closed connections and finished fills settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (fds_end, rss_end) = (open_fds(&server), server.rss());
    sampler.join().unwrap();
    tokio::time::sleep(Duration::from_secs(27)).await;
    let rss_later = server.rss();

    let tally = tally.lock().unwrap();
    let total: u64 = tally.done.values().sum();
    println!(
        "soak: {conns} connections for {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "requests: {total} ok ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    for (kind, count) in &tally.done {
        println!("  {kind:<22} {count}");
    }
    let errors: u64 = tally.errors.values().sum();
    println!("errors: {errors}");
    for (error, count) in &tally.errors {
        println!("  {count} × {error}");
    }
    println!("server open fds: {fds_start} at the start, {fds_end} at the end");
    println!(
        "server RSS: {} MiB at the start, {} MiB at the peak, {} MiB at the end, {} MiB 30 s after the load",
        rss_start >> 20,
        peak.load(Ordering::Relaxed) >> 20,
        rss_end >> 20,
        rss_later >> 20
    );
    assert_eq!(errors, 0, "the soak saw errors");
    assert!(
        fds_end <= fds_start + 8,
        "open descriptors grew from {fds_start} to {fds_end}"
    );
    assert!(
        rss_later <= rss_start + (64 << 20),
        "resident memory did not come back: {} MiB at the start, {} MiB 30 s after the load",
        rss_start >> 20,
        rss_later >> 20
    );
}

/// An error with its causes, without the URL (so errors of a kind count together).
fn chain(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!("{cause}; "));
        source = cause.source();
    }
    if text.is_empty() {
        text = err.to_string();
    }
    text
}

/// One request of the mix; `Ok(kind)` when the answer was right.
async fn one_request(
    client: &reqwest::Client,
    base: &str,
    image: &Image,
    dice: u64,
) -> Result<&'static str, String> {
    let file = format!("{base}/v2/images/{}/file", image.id);
    let cache = format!("{base}/v2/cache/{}", image.id);
    let send = |request: reqwest::RequestBuilder| async move {
        request
            .header("x-auth-token", ADMIN)
            .send()
            .await
            .map_err(|e| format!("send: {}", chain(&e)))
    };
    let expect = |status: u16, allowed: &[u16], what: &str| {
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(format!("{what}: status {status}"))
        }
    };
    match dice {
        0..=54 => {
            let response = send(client.get(&file)).await?;
            expect(response.status().as_u16(), &[200], "GET")?;
            let hit = response
                .headers()
                .get("x-cache-status")
                .is_some_and(|v| v == "HIT");
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("GET body: {}", chain(&e)))?;
            if hex::encode(md5::Md5::digest(&body)) != image.md5 {
                return Err(format!(
                    "GET: wrong bytes ({} of {})",
                    body.len(),
                    image.data.len()
                ));
            }
            Ok(if hit { "GET hit" } else { "GET miss or follow" })
        }
        55..=69 => {
            let len = image.data.len() as u64;
            let start = dice * 7919 % len;
            let end = (start + 4096).min(len - 1);
            let response = send(
                client
                    .get(&file)
                    .header("range", format!("bytes={start}-{end}")),
            )
            .await?;
            let status = response.status().as_u16();
            expect(status, &[200, 206], "range")?;
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("range body: {}", chain(&e)))?;
            let want = if status == 206 {
                &image.data[start as usize..=end as usize]
            } else {
                &image.data[..]
            };
            if body != want {
                return Err("range: wrong bytes".into());
            }
            Ok("GET range")
        }
        70..=77 => {
            let response = send(client.head(&file)).await?;
            expect(response.status().as_u16(), &[200], "HEAD")?;
            Ok("HEAD")
        }
        78..=85 => {
            let response = send(client.delete(&cache)).await?;
            expect(
                response.status().as_u16(),
                &[204, 404],
                "DELETE /v2/cache/{id}",
            )?;
            Ok("DELETE /v2/cache/{id}")
        }
        86..=91 => {
            let response = send(client.get(format!("{base}/v2/cache"))).await?;
            expect(response.status().as_u16(), &[200], "GET /v2/cache")?;
            let listing: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.map_err(|e| e.to_string())?)
                    .map_err(|e| format!("GET /v2/cache: {e}"))?;
            if !listing["cached_images"].is_array() {
                return Err("GET /v2/cache: no cached_images".into());
            }
            Ok("GET /v2/cache")
        }
        92..=96 => {
            let response = send(client.put(&cache)).await?;
            expect(response.status().as_u16(), &[202], "PUT /v2/cache/{id}")?;
            Ok("PUT /v2/cache/{id}")
        }
        97 => {
            let response = send(client.post(format!("{base}/v2/cache/prune"))).await?;
            expect(response.status().as_u16(), &[200], "prune")?;
            Ok("POST /v2/cache/prune")
        }
        _ => {
            let response = send(client.post(format!("{base}/v2/cache/clean"))).await?;
            expect(response.status().as_u16(), &[200], "clean")?;
            Ok("POST /v2/cache/clean")
        }
    }
}
