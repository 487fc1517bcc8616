//! The layer over an index driver that fails on demand: the seam seen from a client.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use md5::Digest;
use tower::{Layer, ServiceExt};

use super::{CacheLayer, TrustAll, X_CACHE_STATUS};
use crate::store::memory_driver::{Call, MemoryDriver};
use crate::store::{ImageCache, StdFillIo};
use crate::{CacheConfig, ImageId};

const IMAGE: &[u8] = b"the bytes of a small image, served by the upstream";

fn upstream(
    request: Request<()>,
) -> impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> {
    assert_eq!(request.uri().path(), "/v2/images/img/file");
    let md5 = hex::encode(md5::Md5::digest(IMAGE));
    std::future::ready(Ok(Response::builder()
        .header("content-md5", md5)
        .body(Full::new(Bytes::from_static(IMAGE)))
        .unwrap()))
}

async fn get<S>(service: &S) -> (StatusCode, String, Bytes)
where
    S: tower::Service<Request<()>, Response = Response<crate::body::CacheBody<Full<Bytes>>>>
        + Clone,
    S::Error: std::fmt::Debug,
{
    let request = Request::get("/v2/images/img/file").body(()).unwrap();
    // The service stays alive while the body is read: dropping it stops its fills.
    let response = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let cache_status = response.headers()[X_CACHE_STATUS]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, cache_status, body)
}

#[tokio::test]
async fn a_driver_failing_at_commit_spares_the_client_and_a_retry_caches() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = ImageCache::open_with_driver(
        CacheConfig::new(dir.path()),
        Arc::new(StdFillIo),
        Box::new(driver.clone()),
    )
    .unwrap();
    let id = ImageId::new("img").unwrap();
    driver.fail_once(Call::Put);
    let service = CacheLayer::new(cache.clone(), TrustAll).layer(tower::service_fn(upstream));

    let (status, cache_status, body) = get(&service).await;
    assert_eq!((status, cache_status.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(body, IMAGE, "the client gets every byte");
    cache.idle().await;
    assert!(!cache.is_cached(&id));
    assert_eq!(driver.record(&id), None);
    assert!(!dir.path().join("img").exists());

    let (_, cache_status, body) = get(&service).await;
    assert_eq!((cache_status.as_str(), &body[..]), ("MISS", IMAGE));
    cache.idle().await;
    assert!(cache.is_cached(&id));
    assert_eq!(driver.record(&id).map(|r| r.size), Some(IMAGE.len() as u64));

    let (_, cache_status, body) = get(&service).await;
    assert_eq!((cache_status.as_str(), &body[..]), ("HIT", IMAGE));
}

/// An upstream whose first answer is cut after 10 bytes, and whose answer to the resume
/// (`Range: bytes=10-`) says it came from a peer.
fn cut_upstream(
    request: Request<()>,
) -> impl std::future::Future<
    Output = Result<
        Response<http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>>,
        Infallible,
    >,
> {
    use http_body::Frame;
    use http_body_util::StreamBody;
    let md5 = hex::encode(md5::Md5::digest(IMAGE));
    let total = IMAGE.len();
    let response = match request.headers().get(http::header::RANGE) {
        None => {
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(&IMAGE[..10]))),
                Err(std::io::Error::other("the connection was cut")),
            ];
            Response::builder()
                .header("content-md5", md5)
                .header("content-length", total)
                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        }
        Some(range) => {
            assert_eq!(range, "bytes=10-");
            let mut response = Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes 10-{}/{total}", total - 1))
                .header("content-length", total - 10)
                .body(
                    Full::new(Bytes::from_static(&IMAGE[10..]))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
            if let Ok(response) = response.as_mut() {
                response.extensions_mut().insert(super::FillSource::Peer);
            }
            response
        }
    };
    std::future::ready(Ok(response.unwrap()))
}

#[tokio::test]
async fn a_fill_s_response_carries_its_resumes_for_a_log_written_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let service = CacheLayer::new(cache.clone(), TrustAll).layer(tower::service_fn(cut_upstream));
    let request = Request::get("/v2/images/img/file").body(()).unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.extensions().get::<super::FillSource>(),
        Some(&super::FillSource::Upstream)
    );
    let resumes = response
        .extensions()
        .get::<super::FillResumes>()
        .cloned()
        .expect("a miss that fills carries its resumes");
    assert!(resumes.list().is_empty(), "none yet");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, IMAGE, "the client gets every byte");
    assert_eq!(resumes.list(), [(10, super::FillSource::Peer)]);
    cache.idle().await;
    assert!(cache.is_cached(&ImageId::new("img").unwrap()));
}
