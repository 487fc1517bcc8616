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

/// What a request the wrapped service answered 2xx does to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aftermath {
    /// An image delete, a new upload: the image leaves the cache and the queue, a fill in
    /// flight is cancelled; on a `centralized_db` node, on every node of the fleet
    /// ([`ImageCache::image_deleted`](crate::ImageCache::image_deleted)).
    Evict,
    /// A deactivation, a visibility or member change (who may download it): the access
    /// decisions remembered for the image are voided.
    VoidDecisions,
}

/// Hands the request to the wrapped service; once it is answered 2xx, applies `aftermath` to
/// image `id`.
pub(crate) async fn answered_then<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    request: Request<ReqBody>,
    (aftermath, id): (Aftermath, ImageId),
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let response = inner.oneshot(request).await?;
    if !response.status().is_success() {
        return Ok(response.map(CacheBody::inner));
    }
    match aftermath {
        Aftermath::VoidDecisions => settings.cache.void_access_decisions(&id),
        Aftermath::Evict => {
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
    }
    Ok(response.map(CacheBody::inner))
}
