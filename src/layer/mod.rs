//! [`CacheLayer`]: serve image downloads from the local cache, fill it on a miss.
//!
//! On a `GET` (or `HEAD`) of an image's data the layer asks its [`AccessCheck`] whether the
//! caller may download the image, then:
//! - a **hit** is answered from the file under `image_cache_dir` (`X-Cache-Status: HIT`,
//!   `Content-Length`, `Content-MD5`, `ETag`), streamed in large chunks; the wrapped service
//!   is not asked for the bytes;
//! - a **miss** goes to the wrapped service, and a plain `200` is streamed to the client while
//!   it is written to the cache (`X-Cache-Status: MISS`); it is committed only when its length
//!   and checksum verify. A failure on the cache side never reaches the client; a failure of
//!   the upstream body ends the client's body with an error and commits nothing.
//!
//! A `2xx` answer to `DELETE /v2/images/{id}` (or a new upload) evicts the image, cancelling a
//! fill in flight. Everything else passes through untouched.
//!
//! # Example
//!
//! Wrap the whole image API, so the access check can ask its metadata route:
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower::Layer;
//! use tower_image_cache::layer::{CacheLayer, InnerMetadata};
//! use tower_image_cache::{CacheConfig, ImageCache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
//! let api = Router::new()
//!     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
//!     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
//! let cached = CacheLayer::new(cache, InnerMetadata::new()).layer(api);
//! // Back into a Router, ready for `axum::serve`.
//! let app: Router = Router::new().fallback_service(cached);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! axum's `Router::layer` wraps each route on its own; there, give the check the whole router
//! with [`MetadataThrough`] (and the management layer the cached router with
//! [`CacheManageLayer::api_through`](crate::CacheManageLayer::api_through)).
//!
//! # Compression
//!
//! A download the cache may fill asks the wrapped service for `Accept-Encoding: identity`: the
//! cache stores the image, not one client's compressed copy of it. A response that comes back
//! encoded anyway is passed through uncached (`X-Cache-Status: BYPASS`, with the reason logged
//! at `warn`).
//!
//! A compression layer *outside* the cache would compress every hit again, and drop its
//! `Content-Length` and `Accept-Ranges` while the `ETag` and `Content-MD5` still name the plain
//! bytes. So every plain image answer (hit, miss, range) carries `Cache-Control: no-transform`,
//! HTTP's way of saying "send these bytes as they are". tower-http's `CompressionLayer` does not
//! read it by itself: give it a predicate that does ([`forbids_transform`]), and it leaves image
//! data alone while still compressing the API's JSON documents:
//!
//! ```
//! use axum::{routing::get, Router};
//! use http::{Extensions, HeaderMap, StatusCode, Version};
//! use tower::Layer;
//! use tower_http::compression::predicate::Predicate;
//! use tower_http::compression::{CompressionLayer, DefaultPredicate};
//! use tower_image_cache::layer::{forbids_transform, CacheLayer, InnerMetadata};
//! use tower_image_cache::{CacheConfig, ImageCache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
//! let api = Router::new()
//!     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
//!     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
//! let honours_no_transform =
//!     |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| !forbids_transform(headers);
//! let app: Router = Router::new()
//!     .fallback_service(CacheLayer::new(cache, InnerMetadata::new()).layer(api))
//!     .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(honours_no_transform)));
//! # let _ = app;
//! # Ok(()) }
//! ```

mod access;
mod authorize;
mod carried;
mod decisions;
mod download;
mod fill_request;
mod forward;
mod hit;
mod inner_metadata;
#[allow(clippy::module_inception)]
mod layer;
mod limits;
mod policy;
mod routes;
mod service;
mod settings;
mod single_flight;
mod sink;
mod source;
mod tee;
#[cfg(test)]
mod tests;
mod transform;

pub use crate::body::{BoxError, CacheBody};
pub use crate::error_page::GlanceError;
pub use crate::future::ResponseFuture;
pub use crate::image_meta::{expected_download, ImageMeta};
pub use crate::route::{InvalidTemplate, RouteTemplate};
pub(crate) use access::caller_headers;
pub use access::{Access, AccessCheck, CheckFuture, TrustAll};
pub use fill_request::{FillRequest, FillResumes, FillSource};
pub use inner_metadata::{InnerMetadata, MetadataThrough};
pub use layer::CacheLayer;
pub(crate) use limits::within;
pub use routes::Routes;
pub use service::CacheService;
pub use settings::X_CACHE_STATUS;
pub use transform::forbids_transform;

// The fuzz targets drive the range decision and the route matcher directly.
#[cfg(feature = "fuzzing")]
pub(crate) use {
    hit::{decide, Answer, Described},
    routes::Action,
};
