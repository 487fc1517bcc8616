//! A download of an image: the access check, then a hit, a fill to follow, or a miss that
//! fills (one upstream read per image, however many ask at once).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use tower::ServiceExt;
use tower_service::Service;

use super::access::{on_behalf_of, AccessCheck};
use super::authorize::{authorize, Authorized};
use super::fill_request::{FillRequest, FillResumes, FillSource};
use super::forward::pass;
use super::hit;
use super::limits::{gateway_timeout, within};
use super::policy::{ask_for_identity, message_length, not_fillable, NotFillable};
use super::settings::{CacheStatus, Settings};
use super::source::{Resume, Source};
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
    ReqBody: Default + Send + 'static,
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
    // The one catalog lookup of a hit: the access check, and then the open, use its entry.
    let entry = cache.cached_entry(&id);
    let cached = entry.is_some();
    let is_get = request.method() == Method::GET;
    let (mut parts, body) = request.into_parts();
    settings.carried.keep(&mut parts);
    // Every download is checked first, cached or not: a refusal is the same whatever the
    // cache holds (no existence oracle).
    let meta = match authorize(&settings, inner.clone(), &parts, &id, cached).await? {
        Authorized::Serve(meta) => meta,
        Authorized::Answer(response) => return Ok(*response),
        Authorized::PassThrough => {
            return pass(
                &settings,
                inner,
                Request::from_parts(parts, body),
                CacheStatus::Bypass("access_undecided"),
            )
            .await
        }
    };
    let limit = settings.limits.response_timeout;
    if !cached && hit::is_partial_or_conditional(&parts.headers) {
        return range_miss(&settings, inner, id, Request::from_parts(parts, body)).await;
    }
    if !cached && !is_get {
        let request = Request::from_parts(parts, body);
        return pass(&settings, inner, request, CacheStatus::Miss).await;
    }

    if let Some(entry) = entry {
        if let Some(response) =
            hit::serve(&settings, &id, entry, &parts.method, &parts.headers).await
        {
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
            if let Some(entry) = cache.cached_entry(&id) {
                if let Some(response) =
                    hit::serve(&settings, &id, entry, &parts.method, &parts.headers).await
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
        parts.extensions.insert(FillRequest::new(id.clone()));
    }
    let resume = is_get.then(|| resumer(inner.clone(), &parts));
    let headers = parts.headers.clone();
    let answered = within(limit, inner.oneshot(Request::from_parts(parts, body))).await;
    let Some(answered) = answered else {
        return Ok(timed_out(&settings, &id, &headers, "the download"));
    };
    let response = answered?;
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
    // A miss beyond the concurrent fills is served through, uncached: a burst of distinct
    // images must not become as many open fills.
    let Ok(slot) = Arc::clone(&settings.fill_slots).try_acquire_owned() else {
        drop(lead);
        cache.metrics().fill_declined("max_concurrent_fills");
        tracing::debug!(image = %id, "at max_concurrent_fills: serving this miss uncached");
        return Ok(settings.mark(
            response.map(CacheBody::inner),
            CacheStatus::Bypass("max_concurrent_fills"),
        ));
    };
    let filling = id.clone();
    let fill = cache
        .blocking(move |c| c.begin_fill(&filling, expected))
        .await;
    // The fill is registered (or will not be): the misses waiting behind this one go on.
    drop(lead);
    let response = match fill {
        Ok(writer) => {
            let without_client = settings.without_client;
            let origin = FillSource::of(&response);
            cache.metrics().fill_source(origin.as_str());
            let resumes = FillResumes::default();
            let mut response = response;
            response.extensions_mut().insert(origin);
            response.extensions_mut().insert(resumes.clone());
            response.map(|body| {
                // The whole length, to tell a cut from an end: the message's own, else the
                // metadata's (Glance sends a download chunked, without Content-Length).
                let source = Source::new(
                    body,
                    resume,
                    settings.limits,
                    content_length.or(meta.size),
                    settings.cache.clone(),
                    (id.clone(), origin, resumes),
                );
                CacheBody::relay(tee::start(
                    settings.cache.clone(),
                    source,
                    writer,
                    content_length,
                    without_client,
                    settings.shutdown.clone(),
                    Some(slot),
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

/// The answer when the wrapped service did not answer `what` in time: `504`, logged and
/// counted.
fn timed_out<A, B>(
    settings: &Settings<A>,
    id: &ImageId,
    request: &http::HeaderMap,
    what: &str,
) -> Response<CacheBody<B>> {
    let limit = settings.limits.response_timeout.unwrap_or_default();
    settings.cache.metrics().upstream_timeout("response");
    tracing::warn!(
        image = %id,
        phase = "response",
        limit_seconds = limit.as_secs_f64(),
        "the image API did not answer {what} in time (upstream_response_timeout); answering 504"
    );
    let response = gateway_timeout(request, &format!("{what} of image {id}"), limit);
    settings.mark(response, CacheStatus::Bypass("upstream_timeout"))
}

/// Asks `inner` again for the image from a byte on, as the caller asked it the first time (its
/// URI and headers, `Range: bytes=N-` added): how a cut fill resumes.
fn resumer<S, ReqBody, ResBody>(inner: S, parts: &http::request::Parts) -> Resume<ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: ResponseBody,
{
    // Made once; each attempt sends a copy with its own Range.
    let mut first: Request<()> = on_behalf_of(parts, parts.uri.clone());
    ask_for_identity(first.headers_mut());
    if let Some(fill) = parts.extensions.get::<FillRequest>() {
        first.extensions_mut().insert(fill.clone());
    }
    let (template, ()) = first.into_parts();
    Box::new(move |from: u64| {
        let mut request = Request::new(ReqBody::default());
        *request.uri_mut() = template.uri.clone();
        *request.version_mut() = template.version;
        *request.headers_mut() = template.headers.clone();
        *request.extensions_mut() = template.extensions.clone();
        request.headers_mut().insert(
            header::RANGE,
            HeaderValue::from_str(&format!("bytes={from}-")).expect("a range is header text"),
        );
        let inner = inner.clone();
        Box::pin(async move {
            match inner.oneshot(request).await {
                Ok(response) => Some(response),
                Err(_) => {
                    tracing::warn!("the image API failed the resumed request");
                    None
                }
            }
        })
    })
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
    // `Content-Range: bytes A-B/TOTAL`: an image larger than the whole cache is not queued.
    let total = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once('/'))
        .and_then(|(_, total)| total.trim().parse::<u64>().ok());
    let fits = total.is_none_or(|total| total <= settings.cache.config().image_cache_max_size);
    if settings.prefetch_range_misses && is_get && response.status().is_success() && fits {
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
