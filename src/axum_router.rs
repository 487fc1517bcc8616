//! [`ImageCacheRouter`]: the layers around a whole axum [`Router`], in one line each (feature
//! `axum`).
//!
//! axum's `Router::layer` wraps each route on its own, where the cache cannot ask the image's
//! metadata route nor the management layer reach the image API; these methods wrap the whole
//! router once, as the layers need, and `CacheLayer` and `CacheManageLayer` given to
//! `Router::layer` panic when the router is built, naming them.

use axum::body::Body;
use axum::Router;
use tower_layer::Layer;

use crate::layer::AccessCheck;
use crate::manage::CacheManageLayer;
use crate::CacheLayer;

/// Wraps a whole axum [`Router`] (its state given) with the cache, then with the management
/// routes, so each layer sees every route:
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_image_cache::manage::{CacheManageLayer, StaticToken};
/// use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, ImageCacheRouter, InnerMetadata};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
/// let api = Router::new()
///     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
///     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
///
/// let app = api
///     .with_image_cache(CacheLayer::new(cache.clone(), InnerMetadata::new()))
///     .with_cache_management(CacheManageLayer::new(cache, StaticToken::new("admin-token")));
/// // axum::serve(listener, app).await?;
/// # let _: Router = app;
/// # Ok(()) }
/// ```
pub trait ImageCacheRouter: Sized {
    /// This router behind `layer`: downloads are served from the cache or fill it, after the
    /// layer's access check asked this router.
    fn with_image_cache<A>(self, layer: CacheLayer<A>) -> Router
    where
        A: AccessCheck<Router, Body>;

    /// This router (with [`with_image_cache`](Self::with_image_cache) already applied, so the
    /// prefetcher's downloads fill the cache) behind the management routes. Inside a tokio
    /// runtime the prefetcher starts at once, fetching what a previous run left queued.
    fn with_cache_management(self, layer: CacheManageLayer) -> Router;
}

impl ImageCacheRouter for Router {
    fn with_image_cache<A>(self, layer: CacheLayer<A>) -> Router
    where
        A: AccessCheck<Router, Body>,
    {
        Router::new().fallback_service(layer.layer(self))
    }

    fn with_cache_management(self, layer: CacheManageLayer) -> Router {
        let service = layer.layer(self);
        if tokio::runtime::Handle::try_current().is_ok() {
            service.start_prefetcher::<Body, _>();
        }
        Router::new().fallback_service(service)
    }
}
