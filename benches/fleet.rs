//! The fleet at the scale operators run (not a test): N simulated cache nodes in this process,
//! each with its own cache directory and node URL, against one PostgreSQL and one MariaDB
//! (the local servers, a database of the bench's own, dropped after), with 2,000 images spread
//! over them (each on 3 nodes) and 1,000 hits/s fleet-wide. For each server and N it reports:
//! - the statements per second the database received from the nodes' replication (counted on
//!   the wire, at a proxy of the bench's own between the nodes and the server, less the one
//!   query each sampled nodes route makes), per node, and the server's CPU (its processes' time
//!   from `/proc`, in % of one core, the route's queries included);
//! - the p50/p99 of `GET /v2/cache/nodes/{id}` over HTTP on one node while the load runs.
//!
//! First, a hit's latency with the embedded index and with the central one, interleaved.
//!
//! `cargo bench --features centralized-db --bench fleet` (about 7 minutes; `FLEET_SECS` sets
//! the load's length, default 60; `FLEET_NODES` the sizes, default `5,50`).

#[path = "../tests/common/db.rs"]
#[allow(dead_code)]
mod db;
#[path = "../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use db::{Server, TestDb};
use proxy::DbProxy;
use tower::ServiceBuilder;
use tower_image_cache::config::DatabaseUrl;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::store::Expected;
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageId, TrustAll};

const IMAGES: usize = 2000;
const COPIES: usize = 3;
const HITS_PER_SECOND: u64 = 1000;
const TOKEN: &str = "bench-token";

/// A cheap deterministic spread (no rand dependency).
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn image(i: usize) -> ImageId {
    ImageId::new(&format!("{i:08x}-0000-4000-8000-{i:012x}")).unwrap()
}

/// CPU time (seconds) of every process named like the database server.
fn server_cpu(server: Server) -> f64 {
    let names: &[&str] = match server {
        Server::Postgres => &["postgres"],
        _ => &["mariadbd", "mysqld"],
    };
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !names.contains(&&stat[open + 1..close]) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let (utime, stime) = (fields[11].parse::<f64>(), fields[12].parse::<f64>());
        if let (Ok(u), Ok(s)) = (utime, stime) {
            total += (u + s) / ticks;
        }
    }
    total
}

/// One node answering the management routes over HTTP (its image API: any id is active).
async fn serve_node(cache: ImageCache) -> (String, tokio::task::JoinHandle<()>) {
    let api = Router::new().route(
        "/v2/images/{id}",
        get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                axum::Json(serde_json::json!({ "id": id, "status": "active" }))
            },
        ),
    );
    let service = ServiceBuilder::new()
        .layer(CacheManageLayer::new(cache.clone(), StaticToken::new(TOKEN)).service_token(TOKEN))
        .layer(CacheLayer::new(cache, TrustAll))
        .service(api);
    let app = Router::new().fallback_service(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, server)
}

struct Measured {
    hits_per_second: f64,
    statements_per_second: f64,
    cpu_percent: f64,
    p50: Duration,
    p99: Duration,
    samples: usize,
}

async fn run(server: Server, nodes: usize, seconds: u64) -> Option<Measured> {
    let db = TestDb::create(server).await?;
    let proxy = DbProxy::start(server).await;
    let url = DatabaseUrl::parse(&db.url_via(proxy.port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let caches: Vec<ImageCache> = (0..nodes)
        .map(|n| {
            let config = CacheConfig::new(dir.path().join(n.to_string()))
                .worker_self_reference_url(format!("http://node-{n}:9292"))
                .centralized_db(url.clone());
            ImageCache::open(config).unwrap()
        })
        .collect();
    let data = vec![3u8; 1024];
    let holders =
        move |i: usize| (0..COPIES).map(move |c| (i + c * (nodes / COPIES).max(1)) % nodes);
    for i in 0..IMAGES {
        for n in holders(i) {
            let mut fill = caches[n]
                .begin_fill(&image(i), Expected::default().size(1024))
                .unwrap();
            fill.write(&data).unwrap();
            fill.finish().unwrap();
        }
    }
    let expected = IMAGES * COPIES.min(nodes);
    let deadline = Instant::now() + Duration::from_secs(120);
    while db.rows().await.len() != expected {
        assert!(
            Instant::now() < deadline,
            "the rows never reached {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (route, serving) = serve_node(caches[0].clone()).await;
    let client = reqwest::Client::new();

    let (statements, cpu, started) = (proxy.statements(), server_cpu(server), Instant::now());
    let hits = Arc::new(AtomicU64::new(0));
    let load = {
        let (caches, hits) = (caches.clone(), hits.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(1));
            let total = HITS_PER_SECOND * seconds;
            for k in 0..total {
                ticks.tick().await;
                let i = (mix(k) % IMAGES as u64) as usize;
                let copy = (mix(k + 1) % COPIES.min(nodes) as u64) as usize;
                let n = holders(i).nth(copy).unwrap();
                let (cache, hits) = (caches[n].clone(), hits.clone());
                tokio::spawn(async move {
                    let Ok(Some(mut reader)) = cache.open_for_read(&image(i)) else {
                        return;
                    };
                    while let Some(chunk) = reader.next_chunk().await {
                        if chunk.is_err() {
                            return;
                        }
                    }
                    hits.fetch_add(1, Ordering::Relaxed);
                });
            }
        })
    };
    let mut latencies = Vec::new();
    let mut k = 0u64;
    while !load.is_finished() {
        let i = (mix(k ^ 0xABCD) % IMAGES as u64) as usize;
        k += 1;
        let asked = Instant::now();
        let response = client
            .get(format!("{route}/v2/cache/nodes/{}", image(i)))
            .header("x-auth-token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let listed: Vec<String> = response.json().await.unwrap();
        latencies.push(asked.elapsed());
        assert_eq!(listed.len(), COPIES.min(nodes));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (statements, cpu) = (proxy.statements() - statements, server_cpu(server) - cpu);
    latencies.sort();
    // The nodes stop before their database is dropped.
    serving.abort();
    let _ = serving.await;
    drop(caches);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Some(Measured {
        hits_per_second: hits.load(Ordering::Relaxed) as f64 / elapsed,
        // Each sampled nodes route ran one query of its own: the rest is the replication.
        statements_per_second: statements.saturating_sub(latencies.len() as u64) as f64 / elapsed,
        cpu_percent: 100.0 * cpu / elapsed,
        p50: at(0.5),
        p99: at(0.99),
        samples: latencies.len(),
    })
}

/// A 4 KiB hit from the store with the embedded index and with the central one on `server`,
/// interleaved (20 rounds of 10,000 hits each) so both see the same machine: the median of each
/// side's rounds, in ns per hit.
async fn hit_latency(server: Server) -> Option<(f64, f64)> {
    let db = TestDb::create(server).await?;
    let dir = tempfile::tempdir().unwrap();
    let embedded = ImageCache::open(CacheConfig::new(dir.path().join("sled"))).unwrap();
    let config = CacheConfig::new(dir.path().join("central"))
        .worker_self_reference_url("http://latency:9292")
        .centralized_db(DatabaseUrl::parse(&db.url).unwrap());
    let central = ImageCache::open(config).unwrap();
    let id = image(0);
    for cache in [&embedded, &central] {
        let mut fill = cache
            .begin_fill(&id, Expected::default().size(4096))
            .unwrap();
        fill.write(&[1u8; 4096]).unwrap();
        fill.finish().unwrap();
    }
    let mut rounds = [Vec::new(), Vec::new()];
    for _ in 0..20 {
        for (side, cache) in [&embedded, &central].into_iter().enumerate() {
            let started = Instant::now();
            for _ in 0..10_000 {
                let mut reader = cache.open_for_read(&id).unwrap().unwrap();
                while let Some(chunk) = reader.next_chunk().await {
                    chunk.unwrap();
                }
            }
            rounds[side].push(started.elapsed().as_nanos() as f64 / 10_000.0);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b] = rounds;
    Some((median(a), median(b)))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let seconds: u64 = std::env::var("FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let sizes: Vec<usize> = std::env::var("FLEET_NODES")
        .unwrap_or_else(|_| "5,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for server in [Server::Postgres, Server::MariaDb] {
        if let Some((embedded, central)) = runtime.block_on(hit_latency(server)) {
            println!(
                "hit (4 KiB, from the store): embedded {embedded:.0} ns, centralized_db on {} \
                 {central:.0} ns ({:+.1}%)",
                server.name(),
                100.0 * (central / embedded - 1.0)
            );
        }
    }
    println!(
        "{:<11} {:>5} {:>8} {:>12} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "database",
        "nodes",
        "hits/s",
        "statements/s",
        "per node",
        "db CPU %",
        "nodes p50",
        "nodes p99",
        "samples"
    );
    for server in [Server::Postgres, Server::MariaDb] {
        for &nodes in &sizes {
            match runtime.block_on(run(server, nodes, seconds)) {
                Some(m) => println!(
                    "{:<11} {:>5} {:>8.0} {:>12.1} {:>10.2} {:>10.1} {:>12.2?} {:>12.2?} {:>8}",
                    server.name(),
                    nodes,
                    m.hits_per_second,
                    m.statements_per_second,
                    m.statements_per_second / nodes as f64,
                    m.cpu_percent,
                    m.p50,
                    m.p99,
                    m.samples
                ),
                None => println!("{:<11} skipped: the server does not answer", server.name()),
            }
        }
    }
}
