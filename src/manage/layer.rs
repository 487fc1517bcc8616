use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tower_layer::Layer;

use super::access::ManageAccess;
use super::identity::Identity;
use super::prefetch::{PrefetchHandle, WorkerSettings};
use super::service::CacheManageService;
use super::shared::Shared;
use crate::route::RouteTemplate;
use crate::store::ImageCache;
use crate::sync::Census;

/// Adds the cache-management routes (`/v2/cache...`, the legacy `/v2/cached_images` and
/// `/v2/queued_images`, and the operator-doc aliases) and runs the prefetcher.
///
/// Put it outside [`CacheLayer`](crate::CacheLayer), around the whole image API: the
/// prefetcher downloads queued images through the service it wraps, so they take the cache's
/// normal fill path. With axum's `Router::layer` (or `route_layer`), which wraps each route
/// alone, the wrapped service cannot answer the image routes: give the layer the router with
/// [`api_through`](Self::api_through). Without it, a layer whose services are alive several at
/// once logs an error when they are built, its management routes answer `500` naming the fix,
/// and its prefetcher does not run. See the [module docs](super).
///
/// The prefetcher and the existence check of `PUT /v2/cache/{id}` build requests of their own,
/// so the request body type must have an empty value (`ReqBody: Default`): axum's `Body` has
/// one; hyper's `Incoming` has not (box it first, as `examples/hyper_server.rs` does).
#[derive(Clone)]
#[must_use]
pub struct CacheManageLayer<Api = WrappedService> {
    /// Where the layer's own requests go.
    api: Api,
    cache: ImageCache,
    access: Arc<dyn ManageAccess>,
    metadata: RouteTemplate,
    worker: WorkerSettings,
    handle: PrefetchHandle,
    /// How many services of this layer (and its clones) are alive: more than one at once is
    /// axum's `Router::layer` wrapping each route alone, where management cannot reach the image
    /// API.
    wrapped: Census,
    /// Set while one service of this layer runs the prefetcher: one per layer.
    prefetching: Arc<AtomicBool>,
}

/// The layer's own requests (the existence check of `PUT /v2/cache/{id}`, the prefetcher's
/// downloads) go to the service it wraps: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrappedService;

/// The layer's own requests go to this service (see [`CacheManageLayer::api_through`]).
#[derive(Debug, Clone)]
pub struct ApiThrough<T>(T);

impl<Api> std::fmt::Debug for CacheManageLayer<Api> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManageLayer")
            .field("cache", &self.cache)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl CacheManageLayer<WrappedService> {
    /// Management of `cache`, for callers `access` allows. The prefetcher fetches with no
    /// identity until [`service_identity`](Self::service_identity) gives it one.
    pub fn new(cache: ImageCache, access: impl ManageAccess) -> Self {
        let interval = cache.config().cache_prefetcher_interval;
        CacheManageLayer {
            api: WrappedService,
            cache,
            access: Arc::new(access),
            metadata: RouteTemplate::new("/v2/images/{id}").expect("a valid template"),
            worker: WorkerSettings {
                identity: Identity::Headers(HeaderMap::new()),
                download: RouteTemplate::new("/v2/images/{id}/file").expect("a valid template"),
                metadata: RouteTemplate::new("/v2/images/{id}").expect("a valid template"),
                concurrency: 2,
                interval,
                prune_every: None,
                clean_every: None,
                response_timeout: Some(Duration::from_secs(60)),
            },
            handle: PrefetchHandle::default(),
            wrapped: Census::default(),
            prefetching: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends the layer's own requests (the existence check of `PUT /v2/cache/{id}`, the
    /// prefetcher's downloads) to `api` instead of the service it wraps: for axum's
    /// `Router::layer`, which wraps each route alone, give it the router with the cache layer
    /// (a clone), as [`MetadataThrough`](crate::layer::MetadataThrough) does for the access
    /// check. The prefetcher then runs once for the layer, however many routes it wraps.
    ///
    /// Give axum's router as it is served: `.with_state(())` builds each route's layers once. A
    /// `Router` called as it is builds them anew for each request, and a prefetch's fill would
    /// stop with the request that started it.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_image_cache::layer::{InnerMetadata, MetadataThrough};
    /// use tower_image_cache::manage::{CacheManageLayer, StaticToken};
    /// use tower_image_cache::{CacheConfig, CacheLayer, ImageCache};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
    /// let api: Router = Router::new()
    ///     .route("/v2/images/{id}", get(|| async { r#"{"status": "active"}"# }))
    ///     .route("/v2/images/{id}/file", get(|| async { "image bytes" }));
    /// let cached = api
    ///     .clone()
    ///     .layer(CacheLayer::new(cache.clone(), MetadataThrough::new(api.clone(), InnerMetadata::new())));
    /// let app: Router = cached.clone().layer(
    ///     CacheManageLayer::new(cache, StaticToken::new("admin"))
    ///         .service_token("admin")
    ///         .api_through(cached.with_state(())),
    /// );
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn api_through<T>(self, api: T) -> CacheManageLayer<ApiThrough<T>> {
        CacheManageLayer {
            api: ApiThrough(api),
            cache: self.cache,
            access: self.access,
            metadata: self.metadata,
            worker: self.worker,
            handle: self.handle,
            wrapped: self.wrapped,
            prefetching: self.prefetching,
        }
    }
}

impl<Api> CacheManageLayer<Api> {
    /// The headers the cache sends as itself: the prefetcher's downloads and the existence
    /// check of `PUT /v2/cache/{id}` (e.g. an admin `X-Auth-Token`).
    pub fn service_identity(mut self, headers: HeaderMap) -> Self {
        self.worker.identity = Identity::Headers(headers);
        self
    }

    /// The cache asks the image API as this Keystone identity (the prefetcher's downloads, the
    /// existence check of `PUT /v2/cache/{id}`): its token is renewed before it expires, and
    /// replaced once when the image API answers 401.
    #[cfg(feature = "keystone")]
    pub fn service_keystone(mut self, keystone: crate::keystone::Keystone) -> Self {
        self.worker.identity = Identity::Keystone(keystone);
        self
    }

    /// Shorthand for a service identity of one `X-Auth-Token`.
    pub fn service_token(mut self, token: &str) -> Self {
        match HeaderValue::from_str(token) {
            Ok(mut value) => {
                value.set_sensitive(true);
                let headers =
                    HeaderMap::from_iter([(HeaderName::from_static("x-auth-token"), value)]);
                self.worker.identity = Identity::Headers(headers);
            }
            Err(_) => {
                tracing::error!("the service token is not a valid header value; not using it")
            }
        }
        self
    }

    /// How many queued images are fetched at once (default 2).
    pub fn prefetch_concurrency(mut self, concurrency: usize) -> Self {
        self.worker.concurrency = concurrency.max(1);
        self
    }

    /// The route the prefetcher downloads (default `/v2/images/{id}/file`).
    pub fn download_route(mut self, route: RouteTemplate) -> Self {
        self.worker.download = route;
        self
    }

    /// The route `PUT /v2/cache/{id}` asks whether the image exists and is active, and the
    /// prefetcher asks about a cached image a caller was answered 404 for (default
    /// `/v2/images/{id}`).
    pub fn metadata_route(mut self, route: RouteTemplate) -> Self {
        self.worker.metadata = route.clone();
        self.metadata = route;
        self
    }

    /// Prunes the cache on a timer, as `image-cache-pruner` from cron would.
    pub fn prune_every(mut self, period: Duration) -> Self {
        self.worker.prune_every = Some(period);
        self
    }

    /// How long the layer's own requests (the prefetcher's downloads, the existence checks of
    /// the queue, `DELETE` and the node list) wait for the image API's response head (default
    /// 60 s; `None`: no limit). A check past it answers `504`; a prefetch past it fails and the
    /// image stays queued. The bytes of a prefetch are bounded by the `CacheLayer` it goes
    /// through ([`CacheLayer::upstream_idle_timeout`](crate::CacheLayer::upstream_idle_timeout)).
    pub fn upstream_response_timeout(mut self, limit: Option<Duration>) -> Self {
        self.worker.response_timeout = limit;
        self
    }

    /// Cleans the cache on a timer, as `image-cache-cleaner` from cron would.
    pub fn clean_every(mut self, period: Duration) -> Self {
        self.worker.clean_every = Some(period);
        self
    }

    /// A handle on the prefetchers of the services this layer builds: wake them, or stop them.
    pub fn prefetch_handle(&self) -> PrefetchHandle {
        self.handle.clone()
    }
}

impl<S: Clone> Layer<S> for CacheManageLayer<WrappedService> {
    type Service = CacheManageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let api = inner.clone();
        self.build(inner, api, false)
    }
}

impl<S, T: Clone> Layer<S> for CacheManageLayer<ApiThrough<T>> {
    type Service = CacheManageService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        self.build(inner, self.api.0.clone(), true)
    }
}

impl<Api> CacheManageLayer<Api> {
    fn build<S, T>(&self, inner: S, api: T, api_given: bool) -> CacheManageService<S, T> {
        let (member, alive) = self.wrapped.enlist();
        if alive >= 2 && !api_given {
            // As axum refuses a bad route: when the router is built, not at the first request.
            panic!(
                "CacheManageLayer wraps more than one service at once: axum's Router::layer or \
                 route_layer wraps each route alone, where PUT /v2/cache/{{id}} and the \
                 prefetcher cannot reach the image API. Wrap the whole router once: \
                 router.with_image_cache(cache_layer).with_cache_management(manage_layer) (use \
                 tower_image_cache::ImageCacheRouter, feature axum), or give the layer the \
                 router with api_through."
            );
        }
        let shared = Shared {
            cache: self.cache.clone(),
            access: Arc::clone(&self.access),
            metadata: self.metadata.clone(),
            identity: self.worker.identity.clone(),
            wrapped: member,
            api_given,
            prefetching: Arc::clone(&self.prefetching),
            response_timeout: self.worker.response_timeout,
        };
        CacheManageService::new(
            inner,
            api,
            Arc::new(shared),
            self.worker.clone(),
            self.handle.child(),
        )
    }
}
