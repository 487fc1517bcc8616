use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::ServiceExt;
use tower_service::Service;

use super::access::{Access, AccessCheck, ImageMeta};
use super::body::CacheBody;
use super::future::ResponseFuture;
use super::hit;
use super::route::{Action, Routes};
use super::single_flight::Leaders;
use super::tee::{self, WithoutClient};
use super::BoxError;
use crate::store::{Expected, ImageCache};
use crate::ImageId;

/// `X-Cache-Status`: `HIT`, `MISS` or `BYPASS`.
pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
const X_IMAGE_META_CHECKSUM: HeaderName = HeaderName::from_static("x-image-meta-checksum");

/// How a response came to be, for `X-Cache-Status`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        })
    }
}

/// What every clone of a [`CacheService`] shares.
#[derive(Debug)]
pub(crate) struct Settings<A> {
    pub(crate) cache: ImageCache,
    pub(crate) access: A,
    pub(crate) routes: Routes,
    pub(crate) cache_status_header: bool,
    pub(crate) prefetch_range_misses: bool,
    pub(crate) without_client: WithoutClient,
    pub(crate) leaders: Leaders,
    /// Cancelled when the last clone of the service is dropped: fills in flight stop and roll
    /// back rather than outlive the service.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl<A> Drop for Settings<A> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl<A> Settings<A> {
    pub(crate) fn mark<B>(&self, mut response: Response<B>, status: CacheStatus) -> Response<B> {
        if self.cache_status_header {
            response
                .headers_mut()
                .insert(X_CACHE_STATUS, status.value());
        }
        response
    }
}

/// The service [`CacheLayer`](super::CacheLayer) builds: answers image downloads from the
/// cache, fills the cache on a miss, and passes everything else to `S`.
#[derive(Debug)]
pub struct CacheService<S, A> {
    inner: S,
    settings: Arc<Settings<A>>,
}

impl<S: Clone, A> Clone for CacheService<S, A> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S, A> CacheService<S, A> {
    pub(crate) fn from_settings(inner: S, settings: Arc<Settings<A>>) -> Self {
        CacheService { inner, settings }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The cache this service fills and serves from.
    pub fn cache(&self) -> &ImageCache {
        &self.settings.cache
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    A: AccessCheck<S, ReqBody>,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let action = self
            .settings
            .routes
            .classify(request.method(), request.uri().path());
        if action == Action::PassThrough {
            return ResponseFuture::pass_through(self.inner.call(request));
        }
        // The readiness rule: the service polled ready goes into the future.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let settings = Arc::clone(&self.settings);
        ResponseFuture::cache(Box::pin(async move {
            match action {
                Action::Download(id) if !settings.cache.is_reserved(&id) => {
                    download(settings, ready, id, request).await
                }
                Action::Evict(id) => evict(settings, ready, id, request).await,
                Action::Download(_) | Action::UnsafeDownload | Action::PassThrough => {
                    pass(&settings, ready, request, CacheStatus::Bypass).await
                }
            }
        }))
    }
}

/// A `GET` or `HEAD` of an image's data.
async fn download<S, A, ReqBody, ResBody>(
    settings: Arc<Settings<A>>,
    inner: S,
    id: ImageId,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: AccessCheck<S, ReqBody>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    if !hit::can_answer(request.headers()) {
        return pass(&settings, inner, request, CacheStatus::Bypass).await;
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
    let (parts, body) = request.into_parts();

    let meta = match settings.access.check(inner.clone(), &parts, &id).await? {
        Access::Serve(meta) => meta,
        // The wrapped service's refusal, as it gave it: no cache header, which would tell a
        // caller who may not see the image that it is cached.
        Access::Deny(refusal) => return Ok(refusal.map(CacheBody::inner)),
        Access::PassThrough => {
            return pass(
                &settings,
                inner,
                Request::from_parts(parts, body),
                CacheStatus::Bypass,
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

    let response = inner.oneshot(Request::from_parts(parts, body)).await?;
    if !is_get || !is_fillable(&response) {
        return Ok(settings.mark(response.map(CacheBody::inner), CacheStatus::Miss));
    }
    // The message's own length (hyper sends an exact size hint as Content-Length); the fill
    // holds the body to it.
    let content_length =
        content_length(response.headers()).or_else(|| response.body().size_hint().exact());
    let expected = expected_image(content_length, response.headers(), &meta);
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

/// Hands the request to the wrapped service, marking how the cache saw it.
async fn pass<S, A, ReqBody, ResBody>(
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

/// A request answered 2xx here removes the image from the cache.
async fn evict<S, A, ReqBody, ResBody>(
    settings: Arc<Settings<A>>,
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
        match settings.cache.blocking(move |c| c.evict(&evicting)).await {
            Ok(_) => tracing::debug!(image = %id, "evicted from the cache"),
            Err(err) => {
                tracing::error!(image = %id, %err, "could not evict an image from the cache")
            }
        }
    }
    Ok(response.map(CacheBody::inner))
}

/// Only a whole, plain, storable image is cached: `200`, not encoded, not `no-store`, not empty.
fn is_fillable<B: Body>(response: &Response<B>) -> bool {
    let headers = response.headers();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_store = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"));
    let empty = response.body().is_end_stream() || content_length(headers) == Some(0);
    response.status() == StatusCode::OK
        && !encoded
        && !no_store
        && !empty
        && !headers.contains_key(header::CONTENT_RANGE)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the fill must turn out to be, from the response headers and the image's metadata.
fn expected_image(content_length: Option<u64>, headers: &HeaderMap, meta: &ImageMeta) -> Expected {
    let mut expected = Expected::default();
    if let Some(size) = content_length.or(meta.size) {
        expected = expected.size(size);
    }
    let md5 = headers
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .and_then(md5_hex)
        .or_else(|| {
            headers
                .get(X_IMAGE_META_CHECKSUM)
                .and_then(|v| v.to_str().ok())
                .and_then(md5_hex)
        })
        .or_else(|| meta.checksum.as_deref().and_then(md5_hex));
    if let Some(md5) = md5 {
        expected = expected.md5_hex(md5);
    }
    let sha512 = meta
        .os_hash_algo
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("sha512"));
    if let Some(value) = meta.os_hash_value.as_deref().filter(|_| sha512) {
        expected = expected.sha512_hex(value);
    }
    expected
}

/// An MD5 as hex, from hex (Glance's form) or base64 (RFC 1864's). Anything else is kept as
/// given, so the fill fails verification rather than caching unverified bytes.
fn md5_hex(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(value.to_ascii_lowercase());
    }
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(raw) if raw.len() == 16 => Some(hex::encode(raw)),
        _ => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_is_read_as_hex_or_base64() {
        assert_eq!(
            md5_hex("5D41402ABC4B2A76B9719D911017C592").as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
        assert_eq!(
            md5_hex("XUFAKrxLKna5cZ2REBfFkg==").as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592")
        );
        assert_eq!(md5_hex("").as_deref(), None);
        assert_eq!(md5_hex("garbage").as_deref(), Some("garbage"));
    }

    #[test]
    fn expected_prefers_headers_then_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(5u64));
        headers.insert(
            X_IMAGE_META_CHECKSUM,
            HeaderValue::from_static("5d41402abc4b2a76b9719d911017c592"),
        );
        let meta = ImageMeta {
            checksum: Some("00000000000000000000000000000000".into()),
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some("ab".into()),
            size: Some(9),
        };
        let expected = expected_image(Some(5), &headers, &meta);
        assert_eq!(
            expected,
            Expected::default()
                .size(5)
                .md5_hex("5d41402abc4b2a76b9719d911017c592")
                .sha512_hex("ab")
        );
        let from_meta = expected_image(None, &HeaderMap::new(), &meta);
        assert_eq!(
            from_meta,
            Expected::default()
                .size(9)
                .md5_hex("00000000000000000000000000000000")
                .sha512_hex("ab")
        );
    }
}
