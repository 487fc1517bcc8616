//! A download of an image: the access check, then a hit, a fill to follow, or a miss that
//! fills (one upstream read per image, however many ask at once).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_service::Service;

use super::access::{Access, AccessCheck};
use super::forward::pass;
use super::hit;
use super::policy::{ask_for_identity, message_length, not_fillable, NotFillable};
use super::settings::{CacheStatus, Settings};
use super::tee;
use crate::body::{CacheBody, ResponseBody};
use crate::image_meta::expected_download;
use crate::store::{BlockingError, FillError};
use crate::ImageId;

/// A `GET` or `HEAD` of an image's data.
pub(crate) async fn download<S, A, ReqBody, ResBody>(
    settings: Arc<Settings<A>>,
    inner: S,
    id: ImageId,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: AccessCheck<S, ReqBody>,
    ResBody: ResponseBody,
{
    if !hit::can_answer(request.headers()) {
        return pass(
            &settings,
            inner,
            request,
            CacheStatus::Bypass("unevaluated_condition"),
        )
        .await;
    }
    let cache = &settings.cache;
    let cached = cache.is_cached(&id);
    let is_get = request.method() == Method::GET;
    if !cached && hit::is_partial_or_conditional(request.headers()) {
        return range_miss(&settings, inner, id, request).await;
    }
    if !cached && !is_get {
        return pass(&settings, inner, request, CacheStatus::Miss).await;
    }
    let (mut parts, body) = request.into_parts();

    let meta = match settings.access.check(inner.clone(), &parts, &id).await? {
        Access::Serve(meta) => meta,
        // The wrapped service's refusal, as it gave it: no cache header, which would tell a
        // caller who may not see the image that it is cached.
        Access::Deny(refusal) => {
            if cached && refusal.status() == StatusCode::NOT_FOUND {
                // Deleted while this node was not told, or only hidden from this caller: the
                // management layer asks with its own identity, and evicts it at once if gone.
                cache.suspect_deleted(&id);
            }
            return Ok(refusal.map(CacheBody::inner));
        }
        Access::PassThrough => {
            return pass(
                &settings,
                inner,
                Request::from_parts(parts, body),
                CacheStatus::Bypass("access_undecided"),
            )
            .await
        }
    };

    if cached {
        if let Some(response) = hit::serve(&settings, &id, &parts.method, &parts.headers).await {
            return Ok(response);
        }
        // Evicted since the lookup: fetch it like any miss.
    }
    // One read of the source per image: a miss either leads (and fills), or waits for the
    // leader and follows its fill.
    let mut lead = None;
    if is_get {
        loop {
            if cache.is_filling(&id) {
                if let Some(response) = follow(&settings, &id).await {
                    return Ok(response);
                }
            }
            if cache.is_cached(&id) {
                if let Some(response) =
                    hit::serve(&settings, &id, &parts.method, &parts.headers).await
                {
                    return Ok(response);
                }
            }
            match settings.leaders.lead_or_wait(&id).await {
                Some(leading) => {
                    lead = Some(leading);
                    break;
                }
                // The leader registered its fill (follow it) or gave up (lead in turn).
                None => continue,
            }
        }
    }

    if is_get {
        ask_for_identity(&mut parts.headers);
    }
    let response = inner.oneshot(Request::from_parts(parts, body)).await?;
    if !is_get {
        return Ok(settings.mark(response.map(CacheBody::inner), CacheStatus::Miss));
    }
    if let Some(reason) = not_fillable(&response) {
        let status = match reason {
            NotFillable::Encoded(_) => {
                tracing::warn!(image = %id, %reason, "not caching this download");
                CacheStatus::Bypass("encoded")
            }
            _ => {
                tracing::debug!(image = %id, %reason, "not caching this download");
                CacheStatus::Miss
            }
        };
        return Ok(settings.mark(response.map(CacheBody::inner), status));
    }
    let content_length = message_length(&response);
    let expected = expected_download(content_length, response.headers(), Some(&meta));
    let filling = id.clone();
    let fill = cache
        .blocking(move |c| c.begin_fill(&filling, expected))
        .await;
    // The fill is registered (or will not be): the misses waiting behind this one go on.
    drop(lead);
    let response = match fill {
        Ok(writer) => {
            let without_client = settings.without_client;
            response.map(|body| {
                CacheBody::relay(tee::start(
                    settings.cache.clone(),
                    body,
                    writer,
                    content_length,
                    without_client,
                    settings.shutdown.clone(),
                ))
            })
        }
        Err(reason @ BlockingError::Failed(FillError::UnknownHashAlgorithm(_))) => {
            tracing::warn!(image = %id, %reason, "not caching this download");
            response.map(CacheBody::inner)
        }
        Err(reason) => {
            tracing::debug!(image = %id, %reason, "not caching this download");
            response.map(CacheBody::inner)
        }
    };
    Ok(settings.mark(response, CacheStatus::Miss))
}

/// A download of an image being filled: served from the growing file, following the writer,
/// instead of a second read of the source. `None` when the fill cannot be followed.
async fn follow<A, B>(settings: &Settings<A>, id: &ImageId) -> Option<Response<CacheBody<B>>> {
    let following = id.clone();
    let reader = match settings.cache.blocking(move |c| c.follow(&following)).await {
        Ok(Some(reader)) => reader,
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!(image = %id, %err, "could not follow a fill; fetching the image instead");
            return None;
        }
    };
    settings.cache.metrics().followed();
    let size = reader.size();
    let mut response = Response::new(CacheBody::follow(reader));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Some(settings.mark(response, CacheStatus::Hit))
}

/// A range (or conditional) request for an image not cached: the wrapped service answers it,
/// and when it could (2xx), the whole image is queued for the prefetcher, so the next range
/// request is a hit.
async fn range_miss<S, A, ReqBody, ResBody>(
    settings: &Settings<A>,
    inner: S,
    id: ImageId,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let is_get = request.method() == Method::GET;
    let response = pass(settings, inner, request, CacheStatus::Miss).await?;
    if settings.prefetch_range_misses && is_get && response.status().is_success() {
        let queueing = id.clone();
        if let Err(err) = settings
            .cache
            .blocking(move |c| c.queue_image(&queueing))
            .await
        {
            tracing::warn!(image = %id, %err, "could not queue an image after a range miss");
        }
    }
    Ok(response)
}
