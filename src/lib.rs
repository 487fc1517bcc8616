//! A local image cache for image APIs, as tower middleware: the OpenStack Glance image cache,
//! rebuilt.
//!
//! - [`CacheLayer`] wraps any tower `Service` that serves image data (`GET /v2/images/{id}/file`):
//!   it answers from the local cache, or streams the wrapped service's response to the client
//!   while filling the cache, verifying length and checksum before anything is committed.
//! - [`ImageCache`] is the cache itself: image files under `image_cache_dir`, their attributes in
//!   an index behind a driver seam (an embedded sled database), with Glance's operator verbs.
//! - [`CacheManageLayer`] adds Glance's cache-management routes and runs the prefetcher.
//!
//! # Example
//!
//! With axum (feature `axum`), around the whole router in one line (`ImageCacheRouter`):
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{routing::get, Router};
//! use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageCacheRouter, InnerMetadata};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! // image_cache_dir: committed images, incomplete/, invalid/ and the cache.db index.
//! let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
//!
//! // Your image API; the cache asks its metadata route before serving a cached copy.
//! let api = Router::new()
//!     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
//!     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
//!
//! let app = api.with_image_cache(CacheLayer::new(cache, InnerMetadata::new()));
//! // axum::serve(listener, app).await?;
//! # let _: Router = app;
//! # Ok(()) }
//! # main().unwrap(); }
//! ```
//!
//! Any tower `Service` takes the layer the same way: `CacheLayer::new(cache, check).layer(api)`.
//!
//! # Features
//!
//! The default build is the layers, the cache and its embedded (sled) index. Optional parts:
//!
//! - `axum`: [`ImageCacheRouter`], the layers around a whole axum `Router` in one line each.
//! - `keystone`: Keystone v3 identities ([`keystone`]) and the management layer's Keystone
//!   token validation (`manage::KeystoneAccess`).
//! - `centralized-db`: Glance's `centralized_db` driver: the fleet's records in PostgreSQL,
//!   MySQL/MariaDB or SQLite.
//! - `prometheus-registry`: `ImageCache::register_metrics`, the cache's metrics in an
//!   application's own prometheus-client `Registry` (without it, `ImageCache::render_metrics`
//!   writes them for a `/metrics` route).
//! - `openssl`: fills verified with the system's libcrypto (the fastest MD5 and SHA-512).
//! - `fuzzing`: the fuzz targets' entry points (the module `fuzzing`) and the fault seam of the
//!   tests; not covered by semver.
//!
//! The cache node (`image-cache-server`) and Glance's cache tools (`image-cache-manage`, the
//! pruner, cleaner and prefetcher) are the `image-cache-server` crate, built on this one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code, unreachable_pub)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

#[cfg(feature = "axum")]
mod axum_router;
mod body;
pub mod config;
mod error_page;
mod future;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod image_id;
mod image_meta;
#[cfg(feature = "keystone")]
pub mod keystone;
pub mod layer;
pub mod manage;
mod metrics;
mod route;
pub mod store;
mod sync;

#[cfg(feature = "axum")]
pub use axum_router::ImageCacheRouter;
pub use config::CacheConfig;
pub use image_id::{ImageId, InvalidImageId};
pub use layer::{CacheLayer, CacheService, InnerMetadata, TrustAll};
pub use manage::CacheManageLayer;
pub use store::ImageCache;

// The README's examples are compiled as doc tests (they use the axum one-liner).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
