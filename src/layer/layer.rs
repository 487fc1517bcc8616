use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::access::InnerMetadata;
use super::limits::{UpstreamLimits, DEFAULT_MAX_CONCURRENT_FILLS};
use super::routes::Routes;
use super::service::CacheService;
use super::settings::Settings;
use super::tee::WithoutClient;
use crate::store::ImageCache;
use crate::sync::Census;

/// Adds a local image cache in front of an image API. See the [module docs](super).
///
/// The access check is a required argument: [`InnerMetadata`](super::InnerMetadata) asks the
/// wrapped service, [`TrustAll`](super::TrustAll) is for deployments that authorize in front.
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheLayer<A> {
    cache: ImageCache,
    access: A,
    routes: Routes,
    cache_status_header: bool,
    prefetch_range_misses: bool,
    without_client: WithoutClient,
    limits: UpstreamLimits,
    max_concurrent_fills: usize,
    /// The services of this layer (and its clones) alive now.
    live: Census,
}

impl<A> CacheLayer<A> {
    /// A layer that caches into `cache` and asks `access` before serving a cached image.
    pub fn new(cache: ImageCache, access: A) -> Self {
        CacheLayer {
            cache,
            access,
            routes: Routes::default(),
            cache_status_header: true,
            prefetch_range_misses: true,
            without_client: WithoutClient::Continue,
            limits: UpstreamLimits::default(),
            max_concurrent_fills: DEFAULT_MAX_CONCURRENT_FILLS,
            live: Census::default(),
        }
    }

    /// Replaces the routes the cache acts on (default: Glance v2 and v1).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Whether responses of cache routes carry `X-Cache-Status: HIT | MISS | BYPASS`
    /// (default: on).
    pub fn cache_status_header(mut self, enabled: bool) -> Self {
        self.cache_status_header = enabled;
        self
    }

    /// Whether a range request for an image not cached also queues the whole image for the
    /// prefetcher (default: on), so the next range request is a hit. The prefetcher runs in
    /// [`CacheManageLayer`](crate::CacheManageLayer).
    pub fn prefetch_range_misses(mut self, enabled: bool) -> Self {
        self.prefetch_range_misses = enabled;
        self
    }

    /// Whether a fill goes on when the client that started it disconnects (default: yes, for
    /// the cache and for the requests following the fill). When off, a fill nobody reads any
    /// more stops and rolls back.
    pub fn fill_without_client(mut self, enabled: bool) -> Self {
        self.without_client = if enabled {
            WithoutClient::Continue
        } else {
            WithoutClient::StopWhenUnread
        };
        self
    }
}

impl<A> CacheLayer<A> {
    /// How long a download (and its access check) waits for the wrapped service's response
    /// head before the client gets `504 Gateway Timeout` (default 60 s, nginx's
    /// `proxy_read_timeout`; `None`: no limit).
    pub fn upstream_response_timeout(mut self, limit: Option<Duration>) -> Self {
        self.limits.response_timeout = limit;
        self
    }

    /// How long a fill waits for the next bytes of the wrapped service's body before it counts
    /// the body as cut (default 60 s; `None`: no limit). A cut fill resumes, see
    /// [`upstream_resume_attempts`](Self::upstream_resume_attempts).
    pub fn upstream_idle_timeout(mut self, limit: Option<Duration>) -> Self {
        self.limits.idle_timeout = limit;
        self
    }

    /// How many times a fill whose body was cut (an error, an early end, the idle limit) asks
    /// the wrapped service again with `Range: bytes=N-` and the caller's headers, continuing
    /// from byte N while every client keeps reading (default 3, with a backoff from 250 ms;
    /// 0: a cut fails the fill). A `200` to that request is read from byte N on.
    pub fn upstream_resume_attempts(mut self, attempts: u32) -> Self {
        self.limits.resume_attempts = attempts;
        self
    }

    /// How many fills may run at once (default 16); a miss beyond is served through uncached
    /// (`X-Cache-Status: BYPASS`, counted in `image_cache_fills_declined_total`).
    pub fn max_concurrent_fills(mut self, fills: usize) -> Self {
        self.max_concurrent_fills = fills;
        self
    }
}

impl<S, A: Clone + 'static> Layer<S> for CacheLayer<A> {
    type Service = CacheService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        let (member, live) = self.live.enlist();
        let asks_wrapped_service = (&self.access as &dyn Any).is::<InnerMetadata>();
        if live == 2 && asks_wrapped_service {
            tracing::error!(
                "CacheLayer with InnerMetadata wraps more than one service at once. With axum's \
                 Router::layer or route_layer it wraps each route alone, where the image's \
                 metadata route cannot be asked, and every download passes through uncached. \
                 Give the check the router (MetadataThrough::new(router.clone(), \
                 InnerMetadata::new())), or wrap the whole router once."
            );
        }
        CacheService::from_settings(
            inner,
            Arc::new(Settings {
                cache: self.cache.clone(),
                access: self.access.clone(),
                routes: self.routes.clone(),
                cache_status_header: self.cache_status_header,
                prefetch_range_misses: self.prefetch_range_misses,
                without_client: self.without_client,
                limits: self.limits,
                fill_slots: Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_fills)),
                leaders: Default::default(),
                shutdown: Default::default(),
                _member: member,
            }),
        )
    }
}
