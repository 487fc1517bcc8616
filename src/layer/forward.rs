//! Requests the wrapped service answers: passed through marked with how the cache saw them, or
//! answered and then evicted from the cache.

use http::{Request, Response};
use tower::ServiceExt;
use tower_service::Service;

use super::settings::{CacheStatus, Settings};
use crate::body::CacheBody;
use crate::ImageId;

/// Hands the request to the wrapped service, marking how the cache saw it.
pub(crate) async fn pass<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    request: Request<ReqBody>,
    status: CacheStatus,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let response = inner.oneshot(request).await?;
    Ok(settings.mark(response.map(CacheBody::inner), status))
}

/// A request (an image delete, a new upload) that, answered 2xx, removes the image from the
/// cache and the queue, cancelling a fill in flight; on a `centralized_db` node, from every
/// node of the fleet ([`ImageCache::image_deleted`](crate::ImageCache::image_deleted)).
pub(crate) async fn evict<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    id: ImageId,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let response = inner.oneshot(request).await?;
    if response.status().is_success() {
        let evicting = id.clone();
        match settings
            .cache
            .blocking(move |c| c.image_deleted(&evicting))
            .await
        {
            Ok(_) => tracing::debug!(image = %id, "evicted from the cache"),
            Err(err) => {
                tracing::error!(image = %id, %err, "could not evict an image from the cache")
            }
        }
    }
    Ok(response.map(CacheBody::inner))
}

/// A request that, answered 2xx, may change who may download the image (a deactivation, a
/// visibility or member change): the access decisions remembered for it are voided.
pub(crate) async fn changed<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    id: ImageId,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let response = inner.oneshot(request).await?;
    if response.status().is_success() {
        settings.cache.void_access_decisions(&id);
    }
    Ok(response.map(CacheBody::inner))
}
