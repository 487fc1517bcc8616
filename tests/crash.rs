//! The crash-kill harness, in the manner of sled's crash tests.
//!
//! The test re-executes its own binary as a child (`CRASH_CHILD_DIR` set). The child serves the
//! fake API behind `CacheManageLayer` and `CacheLayer` on 127.0.0.1 and drives it from several
//! tasks: full and range downloads (some abandoned halfway), uploads' worth of misbehaving
//! upstreams (wrong checksum, short body, failure mid-stream), management deletes, queueing,
//! prune and clean, with a cache small enough that commits prune in the background. The parent
//! kills it with SIGKILL at a random instant, reopens the cache and checks:
//!
//! - the cache opens;
//! - every image it serves has exactly the upstream's bytes (checked through the layer, with an
//!   upstream that refuses everything, so only the cache can answer);
//! - every index entry has its file, of the indexed size;
//! - every committed file is in the index after reconcile;
//! - nothing in `incomplete/` or `invalid/` is served; open reclaims `incomplete/`, and clean
//!   reaps `invalid/`.
//!
//! Kills come in chains of five on one directory, so a crash also lands on a cache that a crash
//! left behind. Everything is seeded: the run prints its seed, and `CRASH_SEED=<seed>` replays
//! it (the instants a kill lands on still depend on the machine). `CRASH_KILLS=<n>` asks for more
//! than the default 100.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageId, TrustAll};

const IMAGES: u64 = 10;
const CHAIN: u64 = 5;
const DEFAULT_KILLS: u64 = 100;
const READY: &str = "crash-child-ready";
const TEST_NAME: &str = "killed_at_random_instants_the_cache_never_serves_a_wrong_byte";

/// splitmix64: small, seedable, good enough to pick actions and instants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn image_name(k: u64) -> String {
    format!("crash-{k}")
}

/// The upstream's bytes for image `k`: sizes from 96 KiB to about 2 MiB, contents unlike any
/// other image's, so a file holding another image's bytes (or a prefix) is caught.
fn image_bytes(k: u64) -> Bytes {
    let len = 96 * 1024 + k as usize * 211_111;
    let mut rng = Rng(k.wrapping_mul(0x1234_5678_9abc_def1) ^ 0xfeed);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next().to_le_bytes());
    }
    data.truncate(len);
    data.into()
}

fn config(dir: &Path) -> CacheConfig {
    // Smaller than the images together, so commits go over the limit and prune.
    CacheConfig::new(dir).image_cache_max_size(6 * 1024 * 1024)
}

#[test]
fn killed_at_random_instants_the_cache_never_serves_a_wrong_byte() {
    if let (Ok(dir), Ok(seed)) = (
        std::env::var("CRASH_CHILD_DIR"),
        std::env::var("CRASH_CHILD_SEED"),
    ) {
        child(Path::new(&dir), seed.parse().unwrap());
        return;
    }
    let kills: u64 = std::env::var("CRASH_KILLS").map_or(DEFAULT_KILLS, |n| n.parse().unwrap());
    let base: u64 = std::env::var("CRASH_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        },
        |s| s.parse().unwrap(),
    );
    eprintln!(
        "crash harness: {kills} kills, seeds {base}..{}; replay with CRASH_SEED={base} CRASH_KILLS={kills}",
        base + kills
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut totals = Totals::default();
    let mut dir = tempfile::tempdir().unwrap();
    for i in 0..kills {
        if i % CHAIN == 0 && i > 0 {
            dir = tempfile::tempdir().unwrap();
        }
        let seed = base + i;
        let cache_dir = dir.path().join("cache");
        let mut rng = Rng(seed);
        let mut child = spawn_child(&cache_dir, seed);
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().unwrap();
        child.wait().unwrap();
        let found = runtime.block_on(check_invariants(&cache_dir, seed));
        totals.add(&found);
    }
    eprintln!(
        "crash harness: {kills} kills; after them {} cached images served and checked, {} \
         incomplete leftovers reclaimed at open, {} invalid reaped by clean, {} files adopted by \
         reconcile",
        totals.served, totals.incomplete, totals.invalid, totals.adopted
    );
    assert!(
        totals.served > 0,
        "no kill left a cached image: the children did no work"
    );
}

fn spawn_child(cache_dir: &Path, seed: u64) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("CRASH_CHILD_DIR", cache_dir)
        .env("CRASH_CHILD_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill only once the child is at work, so no kill lands on a process still starting.
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains(READY) {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the child never got ready"
        );
    }
    let status = child.wait().unwrap();
    panic!("seed {seed}: the child exited before it was ready ({status})");
}

#[derive(Default)]
struct Totals {
    served: usize,
    incomplete: usize,
    invalid: usize,
    adopted: usize,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.served += other.served;
        self.incomplete += other.incomplete;
        self.invalid += other.invalid;
        self.adopted += other.adopted;
    }
}

async fn check_invariants(cache_dir: &Path, seed: u64) -> Totals {
    let mut found = Totals {
        incomplete: listing(&cache_dir.join("incomplete")).len(),
        invalid: listing(&cache_dir.join("invalid")).len(),
        ..Totals::default()
    };
    let cache = ImageCache::open(config(cache_dir).image_cache_stall_time(Duration::ZERO))
        .unwrap_or_else(|err| panic!("seed {seed}: the cache does not open: {err}"));
    assert!(
        listing(&cache_dir.join("incomplete")).is_empty(),
        "seed {seed}: open reclaims every unfinished fill"
    );

    let cached = cache.cached_images();
    for image in &cached {
        let file = cache_dir.join(&image.image_id);
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|_| panic!("seed {seed}: {} is indexed without a file", image.image_id))
            .len();
        assert_eq!(len, image.size, "seed {seed}: {} size", image.image_id);
        found.adopted += usize::from(image.checksum.is_none());
    }
    for name in listing(cache_dir) {
        if ["cache.db", "incomplete", "invalid"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            cached.iter().any(|image| image.image_id == name),
            "seed {seed}: the committed file {name} is not in the index after reconcile"
        );
    }

    // Only the cache can answer: the upstream refuses everything.
    let refusing = tower::service_fn(|_: http::Request<Body>| async {
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .status(503)
                .body(Body::empty())
                .unwrap(),
        )
    });
    let service = CacheLayer::new(cache.clone(), TrustAll).layer(refusing);
    for k in 0..IMAGES {
        let name = image_name(k);
        let request = http::Request::get(format!("/v2/images/{name}/file"))
            .body(Body::empty())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        let is_cached = cache.is_cached(&ImageId::new(&name).unwrap());
        match response.status().as_u16() {
            200 => {
                assert!(is_cached, "seed {seed}: {name} served but not cached");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(
                    body == image_bytes(k),
                    "seed {seed}: {name} served {} bytes that are not the upstream's",
                    body.len()
                );
                found.served += 1;
            }
            503 => assert!(!is_cached, "seed {seed}: {name} is cached but not served"),
            other => panic!("seed {seed}: {name} answered {other}"),
        }
    }

    let cleaned = cache.clean().unwrap();
    assert_eq!(
        cleaned.invalid_removed + cleaned.stalled_removed,
        found.invalid,
        "seed {seed}: clean reaps every leftover open did not"
    );
    assert!(listing(&cache_dir.join("incomplete")).is_empty());
    assert!(listing(&cache_dir.join("invalid")).is_empty());
    drop(service);
    drop(cache);
    found
}

/// The child: serve and churn until killed.
fn child(cache_dir: &Path, seed: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = ImageCache::open(config(cache_dir)).unwrap();
        let api = FakeApi::new();
        for k in 0..IMAGES {
            api.add(&image_name(k), FakeImage::private(image_bytes(k)));
        }
        let addr = serve_managed(&cache, &api).await;
        println!("{READY}");

        let mut workers = Vec::new();
        for worker in 0..4 {
            let api = Arc::clone(&api);
            let client = reqwest::Client::new();
            let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(worker));
            workers.push(tokio::spawn(async move {
                loop {
                    churn(&client, addr, &api, &mut rng).await;
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
    });
}

async fn churn(client: &reqwest::Client, addr: std::net::SocketAddr, api: &FakeApi, rng: &mut Rng) {
    let name = image_name(rng.below(IMAGES));
    let url = |path: &str| format!("http://{addr}{path}");
    let file = url(&format!("/v2/images/{name}/file"));
    match rng.below(20) {
        0..=7 => {
            let Ok(response) = client.get(&file).header("x-auth-token", OWNER).send().await else {
                return;
            };
            let mut body = response.bytes_stream();
            let abandon = rng.below(4) == 0;
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                if chunk.is_err() || (abandon && rng.below(8) == 0) {
                    break;
                }
            }
        }
        8..=9 => {
            let start = rng.below(90_000);
            let _ = client
                .get(&file)
                .header("x-auth-token", OWNER)
                .header(
                    "range",
                    format!("bytes={start}-{}", start + rng.below(5000)),
                )
                .send()
                .await;
        }
        10..=11 => {
            let _ = client
                .delete(url(&format!("/v2/cache/{name}")))
                .header("x-auth-token", ADMIN)
                .send()
                .await;
        }
        12 => {
            let _ = client
                .put(url(&format!("/v2/cache/{name}")))
                .header("x-auth-token", ADMIN)
                .send()
                .await;
        }
        13 => {
            let _ = client
                .post(url("/v2/cache/prune"))
                .header("x-auth-token", ADMIN)
                .send()
                .await;
        }
        14 => {
            let _ = client
                .post(url("/v2/cache/clean"))
                .header("x-auth-token", ADMIN)
                .send()
                .await;
        }
        15..=17 => {
            // The upstream misbehaves for a while: its fills must all roll back.
            let behavior = match rng.below(3) {
                0 => Behavior::WrongChecksum,
                1 => Behavior::ShortBody,
                _ => Behavior::FailMidStreamAlways,
            };
            api.update(&name, |image| image.behavior = behavior);
        }
        _ => api.update(&name, |image| image.behavior = Behavior::Normal),
    }
}
