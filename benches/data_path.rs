//! The data path in-process: hits served from the cache, and a miss that fills it against the
//! same download without the cache. Bodies are drained, as a client would.
//!
//! `cargo bench --bench data_path`

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
            vec![Bytes::from_static(br#"{"status": "active"}"#)]
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
        let api = MemoryApi { data: data.clone() };
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
    let api = MemoryApi { data };
    group.bench_function("passthrough", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = api.clone().oneshot(get("img")).await.unwrap();
            assert_eq!(drain(response.into_body()).await, size);
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let service = CacheLayer::new(cache.clone(), TrustAll).layer(api.clone());
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    group.bench_function("fill", |b| {
        b.to_async(&runtime).iter(|| async {
            // A fresh id each time: every iteration is a miss that writes and commits.
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let response = service
                .clone()
                .oneshot(get(&format!("img{n}")))
                .await
                .unwrap();
            assert_eq!(drain(response.into_body()).await, size);
            cache.idle().await;
            cache.delete_all_cached_images().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, hits, fills);
criterion_main!(benches);
