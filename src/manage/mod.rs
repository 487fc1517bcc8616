//! [`CacheManageLayer`]: the cache-management routes, and the prefetcher behind them.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2/cache` | 200 `{"cached_images": [...], "queued_images": [...]}`, exactly Glance's keys; with `?in_progress=true` (this crate's) also `"in_progress": [...]`, the fills running now |
//! | `PUT /v2/cache/{id}` | 202, queued and the prefetcher woken; 404 unknown image, 400 not active |
//! | `DELETE /v2/cache/{id}` | 204 (also for a known image in neither, as Glance); 404 unknown image |
//! | `DELETE /v2/cache` | 204; `x-image-cache-clear-target`: `cache`, `queue`, `both`/empty/absent |
//! | `POST /v2/cache/clean` | 200 `{"invalid_removed": n, "stalled_removed": n}` |
//! | `POST /v2/cache/prune` | 200 `{"total_files_pruned": n, "total_bytes_pruned": b}` |
//! | `POST /v2/cache/prefetch` | 202, the queue runs now |
//! | `GET /v2/cache/nodes/{id}` | 200 the URLs of the fleet's nodes holding it (`[]`: none), from the central database; 409 unless `centralized_db`; 404 unknown image; 503 database unreachable |
//! | `GET /v2/cache/nodes` | 200 `{"nodes": [...]}`: every node of the fleet (this crate's route); 409 unless `centralized_db` |
//! | `GET /v2/cached_images`, `GET /cached-images` | 200 `{"cached_images": [...]}` |
//! | `DELETE /v2/cached_images/{id}`, `DELETE /cached-images/{id}` | 200 `null` |
//! | `DELETE /v2/cached_images` | 200 `{"num_deleted": n}` |
//! | `PUT /v2/queued_images/{id}`, `PUT /queued/{id}` | 200 `null` |
//! | `GET /v2/queued_images` | 200 `{"queued_images": [...]}` |
//! | `DELETE /v2/queued_images/{id}` | 200 `null` |
//! | `DELETE /v2/queued_images` | 200 `{"num_deleted": n}` |
//!
//! Every answer names the node that gave it in [`NODE_HEADER`] when the cache's configuration
//! has a `worker_self_reference_url`, so a tool can tell one node from a load balancer.
//!
//! Every route first asks the [`ManageAccess`] check (403 when denied), then checks the method
//! (405 with `Allow`), the id (400) and that no request body was sent (400). As in Glance, a
//! caller refused `PUT` or `DELETE /v2/cache/{id}` who cannot see the image (the API answers 404
//! to their own token) is told it is not found instead, unless the cache holds it. Errors are the ones
//! real Glance gives, in its words and body: webob's HTML page, or `{"message", "code",
//! "title"}` when the caller's `Accept` asks for JSON, so python-glanceclient prints the same.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use tower_image_cache::manage::{CacheManageLayer, StaticToken};
//! use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
//! let api = Router::new()
//!     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
//!     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
//! let service = ServiceBuilder::new()
//!     .layer(CacheManageLayer::new(cache.clone(), StaticToken::new("admin-token")).service_token("admin-token"))
//!     .layer(CacheLayer::new(cache, InnerMetadata::new()))
//!     .service(api);
//! let app: Router = Router::new().fallback_service(service);
//! # let _ = app;
//! # Ok(()) }
//! ```

mod access;
mod handlers;
mod identity;
#[cfg(feature = "keystone")]
mod keystone_access;
#[allow(clippy::module_inception)]
mod layer;
mod op;
mod prefetch;
mod response;
mod routes;
mod service;
mod shared;

pub use prefetch::PrefetchHandle;

// The fuzz targets drive the route matcher directly.
pub use access::{Decide, Decision, ManageAccess, RoleHeader, StaticToken};
pub use handlers::NODE_HEADER;
#[cfg(feature = "keystone")]
pub use keystone_access::KeystoneAccess;
pub use layer::{ApiThrough, CacheManageLayer, WrappedService};
#[cfg(feature = "fuzzing")]
pub(crate) use routes::Endpoint;
pub use service::CacheManageService;
