//! [`InnerMetadata`] and [`MetadataThrough`]: the access check that asks the image API itself
//! (its metadata route, and a one-byte probe of the download).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, request, Request, Response, StatusCode};
use http_body::Body;
use tower::ServiceExt;
use tower_service::Service;

use super::access::{on_behalf_of, Access, AccessCheck, CheckFuture};
use super::policy::ask_for_identity;
use crate::body::{BoxError, ResponseBody};
use crate::image_meta::{read_document, ImageState};
use crate::route::RouteTemplate;
use crate::ImageId;

/// Asks the wrapped service, with the caller's own headers (and only the request extensions
/// named with [`CacheLayer::carry_extension`](super::CacheLayer::carry_extension)), what
/// it would decide for this download: the image's metadata (`GET /v2/images/{id}` by default)
/// and, at the same time, a probe of the download itself (the caller's own download URI with
/// `Range: bytes=0-0`). It serves from the cache only when the metadata answers `200` with
/// `"status": "active"` and the probe is allowed (`206`, or `200` from an API that ignores
/// `Range`). The probe is what makes the check the API's own *download* decision: Glance lets
/// a `reader` see an image's metadata but refuses it the data (`download_image`).
///
/// - `401`, `403`, `404` (from either): that response, the probe's first, is returned to the
///   caller;
/// - `5xx`: the image API is failing ([`Access::Unavailable`]);
/// - `200` with another status (deactivated, queued, ...), any other answer, or a document
///   that cannot be read: the request is passed through to the wrapped service.
///
/// The probe costs the API a ranged read of one byte per check: remember decisions with
/// [`CacheLayer::authorization_cache_time`](super::CacheLayer::authorization_cache_time), or
/// turn the probe off with [`probe_download`](Self::probe_download) for an API whose metadata
/// answer already is its download decision.
///
/// Building the metadata request needs an empty request body: `ReqBody: Default`. axum's `Body`
/// has one; hyper's `Incoming` has not: box each request's body before the layers
/// (`request.map(BodyExt::boxed)`, as `examples/hyper_server.rs` does), since
/// `http_body_util::combinators::BoxBody` is `Default`.
#[derive(Debug, Clone)]
#[must_use]
pub struct InnerMetadata {
    route: RouteTemplate,
    probe: bool,
    /// Set once an inconclusive answer was logged at `warn` (later ones go to `debug`).
    warned: Arc<AtomicBool>,
}

impl Default for InnerMetadata {
    fn default() -> Self {
        InnerMetadata {
            route: RouteTemplate::new("/v2/images/{id}").expect("a valid template"),
            probe: true,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl InnerMetadata {
    /// The check with Glance v2's metadata route, `GET /v2/images/{id}`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses another metadata route.
    pub fn route(mut self, route: RouteTemplate) -> Self {
        self.route = route;
        self
    }

    /// Whether the check also probes the download route (default: yes). Turn it off only for
    /// an API that refuses the metadata to everyone it would refuse the data.
    pub fn probe_download(mut self, probe: bool) -> Self {
        self.probe = probe;
        self
    }

    /// The caller's own download, for its first byte only.
    fn probe_request<B: Default>(&self, request: &request::Parts) -> Option<Request<B>> {
        if !self.probe {
            return None;
        }
        let mut probe = on_behalf_of(request, request.uri.clone());
        let headers = probe.headers_mut();
        headers.insert(header::RANGE, http::HeaderValue::from_static("bytes=0-0"));
        ask_for_identity(headers);
        Some(probe)
    }

    fn metadata_request<B: Default>(&self, request: &request::Parts, id: &ImageId) -> Request<B> {
        let mut metadata = on_behalf_of(request, self.route.uri(id));
        metadata.headers_mut().insert(
            header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        metadata
    }
}

impl<S, ReqBody, ResBody> AccessCheck<S, ReqBody> for InnerMetadata
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Future: Send + 'static>,
    S: Clone + Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    // Stated in full (not as the crate's private `ResponseBody`) so the docs show the contract.
    ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    fn check(
        &self,
        inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        Box::pin(decide(
            inner,
            self.metadata_request(request, id),
            self.probe_request(request),
            id.clone(),
            self.clone(),
        ))
    }
}

/// [`InnerMetadata`]'s check, asking a given service instead of the wrapped one.
///
/// For stacks where the layer wraps only the download route, not the whole API: axum's
/// `Router::layer` wraps each route on its own, so the wrapped service there cannot answer
/// `GET /v2/images/{id}`. Give it the whole router (a clone) instead.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_image_cache::layer::{CacheLayer, InnerMetadata, MetadataThrough};
/// use tower_image_cache::{CacheConfig, ImageCache};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
/// let api: Router = Router::new()
///     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
///     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
/// let check = MetadataThrough::new(api.clone(), InnerMetadata::new());
/// let app: Router = api.layer(CacheLayer::new(cache, check));
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MetadataThrough<T> {
    service: T,
    check: InnerMetadata,
}

impl<T> MetadataThrough<T> {
    /// Asks `service` for the metadata, as `check` describes (its route).
    pub fn new(service: T, check: InnerMetadata) -> Self {
        MetadataThrough { service, check }
    }
}

impl<S, T, ReqBody, ResBody> AccessCheck<S, ReqBody> for MetadataThrough<T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: Service<Request<ReqBody>, Response = Response<ResBody>, Error = S::Error>
        + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    // As for `InnerMetadata`: stated in full, so the docs show the contract.
    ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    fn check(
        &self,
        _inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        let metadata = self.check.metadata_request(request, id);
        Box::pin(decide(
            self.service.clone(),
            metadata,
            self.check.probe_request(request),
            id.clone(),
            self.check.clone(),
        ))
    }
}

/// What the download probe found.
enum Probe<R> {
    Allowed,
    Refused(R),
    Unavailable(R),
    Undecided,
}

/// The metadata and (when given) the download probe, asked at once.
async fn decide<T, ReqBody, ResBody>(
    service: T,
    metadata: Request<ReqBody>,
    probe: Option<Request<ReqBody>>,
    id: ImageId,
    check: InnerMetadata,
) -> Result<Access<Response<ResBody>>, T::Error>
where
    T: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: ResponseBody,
{
    let Some(probe) = probe else {
        return ask_metadata(service, metadata, id, check).await;
    };
    let (meta, probed) = tokio::join!(
        ask_metadata(service.clone(), metadata, id.clone(), check.clone()),
        ask_probe(service, probe)
    );
    let (meta, probed) = (meta?, probed?);
    Ok(match (probed, meta) {
        (Probe::Refused(refusal), _) => Access::Deny(refusal),
        (_, Access::Deny(refusal)) => Access::Deny(refusal),
        (Probe::Unavailable(answer), _) => Access::Unavailable(answer),
        (_, Access::Unavailable(answer)) => Access::Unavailable(answer),
        (Probe::Allowed, meta) => meta,
        (Probe::Undecided, Access::Serve(_)) => {
            tracing::debug!(image = %id, "the download probe was not answered as a download; passing through");
            Access::PassThrough
        }
        (Probe::Undecided, other) => other,
    })
}

/// The caller's download, for one byte: what the API decides for the data itself.
async fn ask_probe<T, ReqBody, ResBody>(
    service: T,
    probe: Request<ReqBody>,
) -> Result<Probe<Response<ResBody>>, T::Error>
where
    T: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let response = service.oneshot(probe).await?;
    Ok(match response.status() {
        // The body (one byte, or the whole image from an API that ignores Range) is dropped.
        StatusCode::PARTIAL_CONTENT | StatusCode::OK | StatusCode::RANGE_NOT_SATISFIABLE => {
            Probe::Allowed
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
            Probe::Refused(response)
        }
        status if status.is_server_error() => Probe::Unavailable(response),
        _ => Probe::Undecided,
    })
}

async fn ask_metadata<T, ReqBody, ResBody>(
    service: T,
    metadata: Request<ReqBody>,
    id: ImageId,
    check: InnerMetadata,
) -> Result<Access<Response<ResBody>>, T::Error>
where
    T: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: ResponseBody,
{
    let route = metadata.uri().path().to_owned();
    let response = service.oneshot(metadata).await?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
            return Ok(Access::Deny(response))
        }
        status if status.is_server_error() => return Ok(Access::Unavailable(response)),
        status => {
            check.inconclusive(&id, &format!("GET {route} answered {status}"));
            return Ok(Access::PassThrough);
        }
    }
    let document = match read_document(response.into_body()).await {
        Ok(document) => document,
        Err(err) => {
            let reason = format!("the answer to GET {route} could not be read: {err}");
            check.inconclusive(&id, &reason);
            return Ok(Access::PassThrough);
        }
    };
    Ok(match ImageState::read(&document) {
        ImageState::Active(meta) => Access::Serve(meta),
        ImageState::Inactive(status) => {
            tracing::debug!(image = %id, %status, "the image is not active; passing through");
            Access::PassThrough
        }
        ImageState::Unreadable => {
            let reason = format!("the answer to GET {route} is not an image document");
            check.inconclusive(&id, &reason);
            Access::PassThrough
        }
    })
}

impl InnerMetadata {
    /// Logs an answer that leaves the check undecided: at `warn` the first time (with the fix for
    /// the usual cause), at `debug` after.
    fn inconclusive(&self, id: &ImageId, reason: &str) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(image = %id, reason, "metadata check inconclusive; passing through");
            return;
        }
        tracing::warn!(
            image = %id,
            reason,
            "the cache's access check cannot tell whether this caller may download the image, so \
             downloads pass through uncached (X-Cache-Status: BYPASS). If the cache wraps single \
             routes (axum's Router::layer or route_layer), the wrapped service cannot answer the \
             image's metadata route: wrap the whole router instead \
             (Router::new().fallback_service(layer.layer(router))), or give the check the router \
             with MetadataThrough::new(router.clone(), InnerMetadata::new()). Logged once; later \
             ones at debug."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_request_carries_the_caller_not_the_download() {
        let (parts, ()) = Request::get("/v2/images/x/file")
            .header("x-auth-token", "secret")
            .header(header::RANGE, "bytes=0-1")
            .header(header::IF_NONE_MATCH, "\"x\"")
            .body(())
            .unwrap()
            .into_parts();
        let request: Request<String> =
            InnerMetadata::new().metadata_request(&parts, &ImageId::new("x").unwrap());
        assert_eq!(request.uri(), "/v2/images/x");
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.headers()["x-auth-token"], "secret");
        assert!(request.headers().get(header::RANGE).is_none());
        assert!(request.headers().get(header::IF_NONE_MATCH).is_none());
    }
}
