//! The data path in-process: hits served from the cache, a miss that fills it against the same
//! download without the cache (bodies drained, as a client would), and the index at 100,000
//! entries (listing, pruning half, reopening). What the digests cost alone: `benches/digests.rs`.
//!
//! `hit_index` compares a hit with the embedded index and with `centralized_db` (run with
//! `--features centralized-db`).
//!
//! `cargo bench --bench data_path` (a few minutes; `-- index` runs one group)

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_image_cache::store::Expected;
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageId, InnerMetadata, TrustAll};

/// An image API that answers metadata and data for any id from memory, 1 MiB per frame.
#[derive(Clone)]
struct MemoryApi {
    data: Bytes,
    /// The metadata document, with the data's `checksum` and `os_hash_value`.
    metadata: Bytes,
}

impl MemoryApi {
    fn new(data: Bytes) -> Self {
        use md5::Digest;
        let metadata = serde_json::json!({
            "status": "active",
            "size": data.len(),
            "checksum": hex::encode(md5::Md5::digest(&data)),
            "os_hash_algo": "sha512",
            "os_hash_value": hex::encode(sha2::Sha512::digest(&data)),
        });
        MemoryApi {
            data,
            metadata: metadata.to_string().into(),
        }
    }
}

impl Service<Request<Full<Bytes>>> for MemoryApi {
    type Response = Response<
        http_body_util::StreamBody<
            futures_util::stream::Iter<
                std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>,
            >,
        >,
    >;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let frames: Vec<Bytes> = if request.uri().path().ends_with("/file") {
            self.data
                .chunks(1024 * 1024)
                .map(|c| self.data.slice_ref(c))
                .collect()
        } else {
            vec![self.metadata.clone()]
        };
        let frames: Vec<_> = frames
            .into_iter()
            .map(|b| Ok(http_body::Frame::data(b)))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut response = Response::new(body);
        if request.uri().path().ends_with("/file") {
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, self.data.len().into());
        }
        std::future::ready(Ok(response))
    }
}

fn get(id: &str) -> Request<Full<Bytes>> {
    Request::get(format!("/v2/images/{id}/file"))
        .body(Full::default())
        .unwrap()
}

async fn drain<B: http_body::Body>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += bytes::Buf::remaining(&data);
        }
    }
    n
}

fn cached(dir: &std::path::Path, data: &Bytes) -> ImageCache {
    let cache = ImageCache::open(CacheConfig::new(dir)).unwrap();
    let id = ImageId::new("img").unwrap();
    let mut fill = cache
        .begin_fill(&id, Expected::default().size(data.len() as u64))
        .unwrap();
    fill.write(data).unwrap();
    fill.finish().unwrap();
    cache
}

fn hits(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("hit");
    group.sample_size(20);
    for size in [4 * 1024, 64 * 1024 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![7u8; size]);
        let cache = cached(dir.path(), &data);
        let api = MemoryApi::new(data.clone());
        group.throughput(Throughput::Bytes(size as u64));
        let trust = CacheLayer::new(cache.clone(), TrustAll).layer(api.clone());
        group.bench_with_input(BenchmarkId::new("trust", size), &size, |b, _| {
            b.to_async(&runtime).iter(|| async {
                let response = trust.clone().oneshot(get("img")).await.unwrap();
                assert_eq!(drain(response.into_body()).await, size);
            })
        });
        let metadata = CacheLayer::new(cache.clone(), InnerMetadata::new()).layer(api);
        group.bench_with_input(BenchmarkId::new("metadata", size), &size, |b, _| {
            b.to_async(&runtime).iter(|| async {
                let response = metadata.clone().oneshot(get("img")).await.unwrap();
                assert_eq!(drain(response.into_body()).await, size);
            })
        });
    }
    group.finish();
}

fn fills(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("miss");
    group.sample_size(10);
    let size = 64 * 1024 * 1024;
    let data = Bytes::from(vec![9u8; size]);
    group.throughput(Throughput::Bytes(size as u64));
    let api = MemoryApi::new(data);
    group.bench_function("passthrough", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = api.clone().oneshot(get("img")).await.unwrap();
            assert_eq!(drain(response.into_body()).await, size);
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // `trust`: verified by the length and MD5 the response gives; `metadata`: by the image's
    // multihash (os_hash_value, SHA-512) alone.
    let trust = CacheLayer::new(cache.clone(), TrustAll).layer(api.clone());
    let metadata = CacheLayer::new(cache.clone(), InnerMetadata::new()).layer(api.clone());
    group.bench_function("fill md5", |b| {
        b.to_async(&runtime)
            .iter(|| fill_once(trust.clone(), &cache, &counter, size))
    });
    group.bench_function("fill sha512", |b| {
        b.to_async(&runtime)
            .iter(|| fill_once(metadata.clone(), &cache, &counter, size))
    });
    group.finish();
}

/// One miss of a fresh id through `service`: drained, committed, then removed again.
async fn fill_once<S>(
    service: S,
    cache: &ImageCache,
    counter: &std::sync::atomic::AtomicU64,
    size: usize,
) where
    S: Service<Request<Full<Bytes>>, Error = Infallible>,
    S::Response: IntoBody,
{
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("img{n}");
    let response = service.oneshot(get(&id)).await.unwrap();
    assert_eq!(response.drained().await, size);
    cache.idle().await;
    assert!(cache.is_cached(&ImageId::new(&id).unwrap()));
    cache.delete_all_cached_images().unwrap();
}

/// A response whose body can be drained (whatever the body type).
trait IntoBody {
    async fn drained(self) -> usize;
}

impl<B> IntoBody for Response<B>
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    async fn drained(self) -> usize {
        drain(self.into_body()).await
    }
}

const ENTRIES: usize = 100_000;

/// Writes `ENTRIES` one-byte images (those missing) straight into a cache directory.
fn fill_directory(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..ENTRIES {
        let path = dir.join(format!("image-{i:06}"));
        if !path.exists() {
            std::fs::write(path, b"x").unwrap();
        }
    }
    // A cache's files were not all written a moment ago: no writeback in the way of the unlinks.
    let _ = std::process::Command::new("sync").status();
}

/// The index at 100,000 entries: list them (the store, and `GET /v2/cache` through the
/// management layer), prune half, and reopen (load and reconcile with the files).
fn index(c: &mut Criterion) {
    use tower_image_cache::manage::{CacheManageLayer, StaticToken};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("index_100k");
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let config =
        CacheConfig::new(dir.path().join("cache")).image_cache_max_size(ENTRIES as u64 / 2);
    fill_directory(&config.image_cache_dir);
    // The first open adopts every file into the index.
    let cache = ImageCache::open(config.clone()).unwrap();
    assert_eq!(cache.cached_images().len(), ENTRIES);

    group.bench_function("list", |b| {
        b.iter(|| assert_eq!(cache.cached_images().len(), ENTRIES))
    });
    let manage = CacheManageLayer::new(cache.clone(), StaticToken::new("t")).layer(
        tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }),
    );
    group.bench_function("GET /v2/cache", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = Request::get("/v2/cache")
                .header("x-auth-token", "t")
                .body(Full::default())
                .unwrap();
            let response = manage.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(drain(response.into_body()).await > ENTRIES * 100);
        })
    });
    drop(manage);
    drop(cache);
    // The prefetcher the management service started lets go of the cache (and sled's lock) on
    // its own runtime thread, just after the service is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ImageCache::open(config.clone()).is_err_and(|err| err.is_locked()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache stayed locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    group.bench_function("reopen", |b| {
        b.iter(|| {
            let cache = ImageCache::open(config.clone()).unwrap();
            assert_eq!(cache.cached_images().len(), ENTRIES);
        })
    });
    group.bench_function("prune half", |b| {
        b.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iterations {
                fill_directory(&config.image_cache_dir);
                let cache = ImageCache::open(config.clone()).unwrap();
                let started = std::time::Instant::now();
                let pruned = cache.prune().unwrap();
                total += started.elapsed();
                assert_eq!(pruned.total_files_pruned, ENTRIES / 2);
            }
            total
        })
    });
    group.finish();
}

/// A 4 KiB hit with the embedded index and with the central one (`centralized_db` on the local
/// PostgreSQL, else an SQLite file): the hit path never waits on the database, so the two should
/// be within noise.
fn hit_index(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("hit_index");
    group.sample_size(30);
    let data = Bytes::from(vec![7u8; 4096]);
    let api = MemoryApi::new(data.clone());
    let sled_dir = tempfile::tempdir().unwrap();
    let sled = cached(sled_dir.path(), &data);
    // Without the feature only the sled index is measured, and nothing is pushed.
    #[cfg_attr(not(feature = "centralized-db"), allow(unused_mut))]
    let mut nodes = vec![("sled", sled)];
    let central_dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "centralized-db")]
    let _database = {
        let (url, database) = runtime.block_on(central::database());
        let config = CacheConfig::new(central_dir.path())
            .worker_self_reference_url("http://bench:9292")
            .centralized_db(tower_image_cache::config::DatabaseUrl::parse(&url).unwrap());
        let cache = ImageCache::open(config).unwrap();
        let id = ImageId::new("img").unwrap();
        let mut fill = cache
            .begin_fill(&id, Expected::default().size(4096))
            .unwrap();
        fill.write(&data).unwrap();
        fill.finish().unwrap();
        nodes.push((database.name(), cache));
        database
    };
    #[cfg(not(feature = "centralized-db"))]
    eprintln!("hit_index: built without the centralized-db feature; only the sled index runs");
    let _ = &central_dir;
    group.throughput(Throughput::Bytes(4096));
    for (name, cache) in nodes.into_iter().rev() {
        let service = CacheLayer::new(cache, TrustAll).layer(api.clone());
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let response = service.clone().oneshot(get("img")).await.unwrap();
                assert_eq!(drain(response.into_body()).await, 4096);
            })
        });
    }
    group.finish();
}

#[cfg(feature = "centralized-db")]
mod central {
    /// The central database for the bench: a database of its own on the local PostgreSQL
    /// (dropped at the end), else an SQLite file.
    pub enum Database {
        Postgres(String),
        Sqlite(#[allow(dead_code)] tempfile::TempDir),
    }

    impl Database {
        pub fn name(&self) -> &'static str {
            match self {
                Database::Postgres(_) => "centralized_db (PostgreSQL)",
                Database::Sqlite(_) => "centralized_db (SQLite)",
            }
        }
    }

    const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

    pub async fn database() -> (String, Database) {
        sqlx::any::install_default_drivers();
        let name = format!("tic_bench_{}", std::process::id());
        if let Ok(admin) = sqlx::AnyPool::connect(ADMIN).await {
            if sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .is_ok()
            {
                let url = format!("postgresql://postgres@127.0.0.1:5432/{name}");
                return (url, Database::Postgres(name));
            }
        }
        eprintln!("hit_index: PostgreSQL on 127.0.0.1:5432 does not answer; using SQLite");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:///{}", dir.path().join("glance.sqlite").display());
        (url, Database::Sqlite(dir))
    }

    impl Drop for Database {
        fn drop(&mut self) {
            let Database::Postgres(name) = self else {
                return;
            };
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async {
                    if let Ok(admin) = sqlx::AnyPool::connect(ADMIN).await {
                        let _ = sqlx::query(&drop).execute(&admin).await;
                    }
                });
            })
            .join();
        }
    }
}

criterion_group!(benches, hits, fills, index, hit_index);
criterion_main!(benches);
