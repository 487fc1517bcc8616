//! Whether this caller may download this image now: a remembered decision, else the access
//! check, within the response limit; while the image API fails, a remembered decision may
//! still admit a hit, and everyone else gets `503` with `Retry-After` (never an unchecked
//! `200`).

use std::sync::Arc;

use http::{request, Request, Response, StatusCode};
use tower_service::Service;

use super::access::{Access, AccessCheck};
use super::decisions::Key;
use super::limits::within;
use super::settings::{CacheStatus, Settings};
use crate::body::{CacheBody, ResponseBody};
use crate::error_page::{ErrorFormat, Refusal};
use crate::image_meta::ImageMeta;
use crate::metrics::Decided;
use crate::ImageId;

/// The verdict for one download.
pub(crate) enum Authorized<B> {
    /// Serve it (from the cache, or fill it), with the image's metadata as the check read it.
    Serve(Arc<ImageMeta>),
    /// The answer is this: a refusal as the API gave it, a 503 or a 504.
    Answer(Box<Response<CacheBody<B>>>),
    /// The wrapped service decides (the request passes through).
    PassThrough,
}

/// Decides the download of `id` by the caller of `parts`; `cached` says whether a stale
/// decision could admit a hit.
pub(crate) async fn authorize<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    parts: &request::Parts,
    id: &ImageId,
    cached: bool,
) -> Result<Authorized<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: AccessCheck<S, ReqBody>,
    ResBody: ResponseBody,
{
    let cache = &settings.cache;
    let key = settings
        .decisions
        .is_kept()
        .then(|| Key::new(id, &parts.headers));
    if let Some(meta) = key
        .as_ref()
        .and_then(|k| settings.decisions.fresh(cache, k))
    {
        cache.metrics().authorization(Decided::Remembered);
        return Ok(Authorized::Serve(meta));
    }
    let limit = settings.limits.response_timeout;
    let checked = within(limit, settings.access.check(inner, parts, id)).await;
    let failed = match checked {
        Some(access) => match access? {
            Access::Serve(meta) => {
                cache.metrics().authorization(Decided::Asked);
                let meta = Arc::new(meta);
                if let Some(key) = key {
                    settings.decisions.remember(key, &meta);
                }
                return Ok(Authorized::Serve(meta));
            }
            Access::Deny(refusal) => {
                if let Some(key) = &key {
                    settings.decisions.forget(key);
                }
                if cached && refusal.status() == StatusCode::NOT_FOUND {
                    // Deleted while this node was not told, or only hidden from this caller:
                    // the management layer asks with its own identity, and evicts it if gone.
                    cache.suspect_deleted(id);
                }
                // The wrapped service's refusal as it gave it, without a cache header: the
                // same whatever the cache holds.
                return Ok(Authorized::Answer(Box::new(refusal.map(CacheBody::inner))));
            }
            Access::PassThrough => return Ok(Authorized::PassThrough),
            Access::Unavailable(answer) => Failure::Status(answer.status()),
        },
        None => Failure::TimedOut,
    };
    // The image API cannot decide now: a hit this caller was allowed a moment ago may still be
    // served, within authorization_stale_if_error.
    if cached {
        if let Some(meta) = key
            .as_ref()
            .and_then(|k| settings.decisions.stale(cache, k))
        {
            cache.metrics().authorization(Decided::Stale);
            tracing::warn!(
                image = %id,
                failure = %failure_text(&failed),
                "the image API cannot check access now; serving a hit on a remembered decision \
                 (authorization_stale_if_error)"
            );
            return Ok(Authorized::Serve(meta));
        }
    }
    cache.metrics().authorization(Decided::Unavailable);
    Ok(Authorized::Answer(Box::new(unavailable(
        settings, id, parts, &failed,
    ))))
}

enum Failure {
    TimedOut,
    Status(StatusCode),
}

fn failure_text(failure: &Failure) -> String {
    match failure {
        Failure::TimedOut => "no answer within upstream_response_timeout".to_owned(),
        Failure::Status(status) => format!("the image API answered {status}"),
    }
}

/// `503` with `Retry-After` (`504` when the API timed out), in Glance's format.
fn unavailable<A, B>(
    settings: &Settings<A>,
    id: &ImageId,
    parts: &request::Parts,
    failure: &Failure,
) -> Response<CacheBody<B>> {
    let status = match failure {
        Failure::TimedOut | Failure::Status(StatusCode::GATEWAY_TIMEOUT) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        Failure::Status(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    if matches!(failure, Failure::TimedOut) {
        settings.cache.metrics().upstream_timeout("response");
    }
    tracing::warn!(
        image = %id,
        failure = %failure_text(failure),
        "the image API cannot check this download's access; answering {}",
        status.as_u16()
    );
    let message = "The image service cannot check access to this image now. Try again later.";
    let response = Refusal::new(status, message)
        .retry_after(5)
        .into_response(ErrorFormat::of(&parts.headers));
    settings.mark(response, CacheStatus::Bypass("upstream_unavailable"))
}
