//! The access check: may this caller download this image now?
//!
//! A cached copy must never reach a caller the wrapped service would refuse, nor be served
//! after the image was deleted or deactivated, so every request the cache would answer is
//! first put to an [`AccessCheck`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, request, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::ServiceExt;
use tower_service::Service;

use crate::body::{BoxError, ResponseBody};
use crate::image_meta::{ImageMeta, ImageState};
use crate::route::RouteTemplate;
use crate::ImageId;

/// The largest metadata document the default check reads.
const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// The verdict of an [`AccessCheck`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Access<R> {
    /// The caller may download the image: serve it from the cache (or fill the cache).
    Serve(ImageMeta),
    /// The image exists but is not to be served from the cache now (for instance deactivated):
    /// the original request goes to the wrapped service, which decides.
    PassThrough,
    /// The caller may not see the image: this response (the wrapped service's own 401, 403 or
    /// 404) is returned as it is.
    Deny(R),
}

/// The future an [`AccessCheck`] returns.
pub type CheckFuture<R, E> = Pin<Box<dyn Future<Output = Result<Access<R>, E>> + Send + 'static>>;

/// Decides whether a request may be answered from the cache.
///
/// `inner` is a clone of the wrapped service, for checks that ask it (it has not been polled
/// ready; use `ServiceExt::oneshot`). `request` holds the caller's method, URI and headers.
pub trait AccessCheck<S, ReqBody>: Clone + Send + Sync + 'static
where
    S: Service<Request<ReqBody>>,
{
    /// Checks whether the caller of `request` may download `id`.
    fn check(
        &self,
        inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error>;
}

/// Asks the wrapped service for the image's metadata with the caller's own headers (not its
/// request extensions)
/// (`GET /v2/images/{id}` by default) and serves from the cache only when it answers `200`
/// with `"status": "active"`.
///
/// - `401`, `403`, `404`: that response is returned to the caller;
/// - `200` with another status (deactivated, queued, ...), any other answer, or a document
///   that cannot be read: the request is passed through to the wrapped service.
///
/// Building the metadata request needs an empty request body: `ReqBody: Default`. axum's `Body`
/// has one; hyper's `Incoming` has not: box each request's body before the layers
/// (`request.map(BodyExt::boxed)`, as `examples/hyper_server.rs` does), since
/// `http_body_util::combinators::BoxBody` is `Default`.
#[derive(Debug, Clone)]
#[must_use]
pub struct InnerMetadata {
    route: RouteTemplate,
    /// Set once an inconclusive answer was logged at `warn` (later ones go to `debug`).
    warned: Arc<AtomicBool>,
}

impl Default for InnerMetadata {
    fn default() -> Self {
        InnerMetadata {
            route: RouteTemplate::new("/v2/images/{id}").expect("a valid template"),
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

    fn metadata_request<B: Default>(&self, request: &request::Parts, id: &ImageId) -> Request<B> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(self.route.render(id))
            .version(request.version);
        if let Some(headers) = builder.headers_mut() {
            *headers = caller_headers(&request.headers);
            headers.insert(
                header::ACCEPT,
                http::HeaderValue::from_static("application/json"),
            );
        }
        // Extensions are not copied: routers keep their match state there (axum appends the
        // path parameters it finds to those already present).
        builder
            .body(B::default())
            .expect("a rendered route is a valid URI")
    }
}

/// The caller's headers minus those that describe the download rather than the caller.
pub(crate) fn caller_headers(headers: &HeaderMap) -> HeaderMap {
    let mut copy = headers.clone();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::CONNECTION,
        header::TE,
        header::UPGRADE,
        header::ACCEPT_ENCODING,
    ] {
        copy.remove(name);
    }
    copy
}

impl<S, ReqBody, ResBody> AccessCheck<S, ReqBody> for InnerMetadata
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    // Stated in full (not as the crate's private `ResponseBody`) so the docs show the contract.
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn check(
        &self,
        inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        Box::pin(ask_metadata(
            inner,
            self.metadata_request(request, id),
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
    // Stated in full (not as the crate's private `ResponseBody`) so the docs show the contract.
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn check(
        &self,
        _inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        let metadata = self.check.metadata_request(request, id);
        Box::pin(ask_metadata(
            self.service.clone(),
            metadata,
            id.clone(),
            self.check.clone(),
        ))
    }
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
        status => {
            check.inconclusive(&id, &format!("GET {route} answered {status}"));
            return Ok(Access::PassThrough);
        }
    }
    let document = match Limited::new(response.into_body(), MAX_METADATA_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
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

/// Serves every cached image to every caller, without asking anyone.
///
/// Only for deployments that authorize every request before it reaches the cache (and where a
/// deleted image is evicted through the cache's own routes). Never the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustAll;

impl<S, ReqBody> AccessCheck<S, ReqBody> for TrustAll
where
    S: Service<Request<ReqBody>>,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    fn check(
        &self,
        _inner: S,
        _request: &request::Parts,
        _id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        Box::pin(std::future::ready(Ok(Access::Serve(ImageMeta::default()))))
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
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.headers()["x-auth-token"], "secret");
        assert!(request.headers().get(header::RANGE).is_none());
        assert!(request.headers().get(header::IF_NONE_MATCH).is_none());
    }
}
