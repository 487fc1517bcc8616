use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::carried::CarriedTypes;
use super::inner_metadata::InnerMetadata;
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
    authorization_cache_time: Option<Duration>,
    authorization_stale_if_error: Option<Duration>,
    carried: CarriedTypes,
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
            authorization_cache_time: None,
            authorization_stale_if_error: None,
            carried: CarriedTypes::default(),
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

    /// How long a caller's *allowed* access check for one image is reused without asking the
    /// wrapped service again (default: not at all, every download is checked). A decision is
    /// keyed by the image and a SHA-256 of the caller's headers (those the check forwards,
    /// request ids aside), is never kept for a refusal, is bounded in number (10,000), and is
    /// voided by the image's delete, deactivation, re-upload or member change seen by this
    /// layer (or announced by the fleet). A user whose role is revoked in Keystone may still
    /// download for this long: keep it short.
    pub fn authorization_cache_time(mut self, limit: Option<Duration>) -> Self {
        self.authorization_cache_time = limit;
        self
    }

    /// How much longer than [`authorization_cache_time`](Self::authorization_cache_time) a
    /// remembered decision may admit a **hit** while the wrapped service fails (answers 5xx,
    /// or nothing within the response timeout), as RFC 5861's `stale-if-error` (default: not
    /// at all). Each such admission is logged and counted
    /// (`image_cache_authorization_decisions_total{decision="stale"}`); a caller without a
    /// decision gets `503` with `Retry-After`, and a miss still needs the wrapped service.
    pub fn authorization_stale_if_error(mut self, limit: Option<Duration>) -> Self {
        self.authorization_stale_if_error = limit;
        self
    }

    /// Carries the caller's request extension of type `T` (set by a layer outside this one: an
    /// auth layer's claims, axum's `ConnectInfo`) into the requests the layer makes on the
    /// caller's behalf: [`InnerMetadata`]'s metadata request and download probe, and a fill's
    /// resumed request. By default they carry no extension (routers keep their match state
    /// there), so a wrapped service that needs one would refuse every check and nothing would
    /// be cached. Repeat for each type. A custom [`AccessCheck`](super::AccessCheck) sees all
    /// of the caller's extensions in the parts it is given.
    ///
    /// Remembered decisions ([`authorization_cache_time`](Self::authorization_cache_time)) are
    /// keyed by the caller's credentials in its headers: with an API that tells callers apart
    /// by a carried extension alone (a client address), do not remember decisions.
    pub fn carry_extension<T: Clone + Send + Sync + 'static>(mut self) -> Self {
        self.carried = self.carried.with::<T>();
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
        if live >= 2 && asks_wrapped_service {
            // As axum refuses a bad route: when the router is built, not at the first request.
            panic!(
                "CacheLayer with InnerMetadata wraps more than one service at once: axum's \
                 Router::layer or route_layer wraps each route alone, where the image's \
                 metadata route cannot be asked, and no download would ever be cached. Wrap the \
                 whole router once: router.with_image_cache(layer) (use \
                 tower_image_cache::ImageCacheRouter, feature axum), or give the check the \
                 router: MetadataThrough::new(router.clone(), InnerMetadata::new())."
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
                decisions: super::decisions::Decisions::new(
                    self.authorization_cache_time,
                    self.authorization_stale_if_error,
                ),
                carried: self.carried.clone(),
                fill_slots: Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_fills)),
                leaders: Default::default(),
                shutdown: Default::default(),
                _member: member,
            }),
        )
    }
}
