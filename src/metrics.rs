//! [`CacheMetrics`]: what a cache has done, as Prometheus counters and gauges.
//!
//! Every `ImageCache` has its own (the layers, the management routes and
//! the prefetcher sharing it count into it); `ImageCache::render_metrics`
//! writes them in the Prometheus text format for a `/metrics` route.

use std::fmt;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// How a response on a download route came to be, for `image_cache_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From the cache (a committed image, or a fill followed).
    Hit,
    /// From the wrapped service (filled into the cache when it could be).
    Miss,
    /// Past the cache, for `reason`.
    Bypass(&'static str),
}

/// The counters and gauges of one cache.
pub(crate) struct CacheMetrics {
    registry: Registry,
    responses: Family<Labels, Counter>,
    // The counters the hit path moves, looked up once: a hit, a chunk never builds a label set.
    hits: Counter,
    misses: Counter,
    bytes_from_cache: Counter,
    bytes_from_upstream: Counter,
    fills_started: Counter,
    fills: Family<Labels, Counter>,
    followers: Counter,
    removed: Family<Labels, Counter>,
    removed_bytes: Counter,
    size_bytes: Gauge,
    max_size_bytes: Gauge,
    images: Gauge,
    queued: Gauge,
    health_probes: Counter,
    upstream_timeouts: Family<Labels, Counter>,
    resumes: Family<Labels, Counter>,
    fills_declined: Family<Labels, Counter>,
    authorization: Family<Labels, Counter>,
}

impl fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheMetrics").finish_non_exhaustive()
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("image_cache");
        let responses = Family::<Labels, Counter>::default();
        registry.register(
            "responses",
            "Responses on image download routes: hit, miss, or bypass with its reason",
            responses.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "bytes",
            "Image bytes sent to clients from the cache, and read from the wrapped service for fills",
            bytes.clone(),
        );
        let fills_started = Counter::default();
        registry.register(
            "fills_started",
            "Fills begun (one upstream read each)",
            fills_started.clone(),
        );
        let fills = Family::<Labels, Counter>::default();
        registry.register(
            "fills",
            "Fills ended: committed, or failed with the reason",
            fills.clone(),
        );
        let followers = Counter::default();
        registry.register(
            "followers",
            "Downloads served by following a fill in progress instead of a read of their own",
            followers.clone(),
        );
        let removed = Family::<Labels, Counter>::default();
        registry.register(
            "removed_files",
            "Files removed by prune (images), and by clean (invalid and stalled fills)",
            removed.clone(),
        );
        let removed_bytes = Counter::default();
        registry.register(
            "pruned_bytes",
            "Bytes of the images prune removed",
            removed_bytes.clone(),
        );
        let size_bytes = Gauge::default();
        registry.register(
            "size_bytes",
            "Bytes of the committed images",
            size_bytes.clone(),
        );
        let max_size_bytes = Gauge::default();
        registry.register(
            "max_size_bytes",
            "image_cache_max_size",
            max_size_bytes.clone(),
        );
        let images = Gauge::default();
        registry.register("images", "Committed images", images.clone());
        let queued = Gauge::default();
        registry.register(
            "queued_images",
            "Images queued for the prefetcher",
            queued.clone(),
        );
        let health_probes = Counter::default();
        registry.register(
            "health_probes",
            "Disk and index probes of the health check (at most one every few seconds)",
            health_probes.clone(),
        );
        let upstream_timeouts = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_timeouts",
            "Upstream requests that timed out, by phase (connect, response, idle)",
            upstream_timeouts.clone(),
        );
        let resumes = Family::<Labels, Counter>::default();
        registry.register(
            "fill_resumes",
            "Fills asked again with Range after their upstream body was cut, by how the upstream answered",
            resumes.clone(),
        );
        let fills_declined = Family::<Labels, Counter>::default();
        registry.register(
            "fills_declined",
            "Misses served through without caching because of an admission limit, by limit",
            fills_declined.clone(),
        );
        let authorization = Family::<Labels, Counter>::default();
        registry.register(
            "authorization_decisions",
            "Access checks of downloads: asked upstream, reused from memory, or admitted stale while the upstream failed",
            authorization.clone(),
        );
        CacheMetrics {
            registry,
            health_probes,
            upstream_timeouts,
            resumes,
            fills_declined,
            authorization,
            hits: responses.get_or_create_owned(&vec![("status", "hit")]),
            misses: responses.get_or_create_owned(&vec![("status", "miss")]),
            bytes_from_cache: bytes.get_or_create_owned(&vec![("source", "cache")]),
            bytes_from_upstream: bytes.get_or_create_owned(&vec![("source", "upstream")]),
            responses,
            fills_started,
            fills,
            followers,
            removed,
            removed_bytes,
            size_bytes,
            max_size_bytes,
            images,
            queued,
        }
    }
}

impl CacheMetrics {
    pub(crate) fn served(&self, served: Served) {
        match served {
            Served::Hit => self.hits.inc(),
            Served::Miss => self.misses.inc(),
            Served::Bypass(reason) => self
                .responses
                .get_or_create(&vec![("status", "bypass"), ("reason", reason)])
                .inc(),
        };
    }

    pub(crate) fn bytes_from_cache(&self, bytes: u64) {
        self.bytes_from_cache.inc_by(bytes);
    }

    pub(crate) fn bytes_from_upstream(&self, bytes: u64) {
        self.bytes_from_upstream.inc_by(bytes);
    }

    pub(crate) fn fill_started(&self) {
        self.fills_started.inc();
    }

    /// A fill ended: `None` when it committed, else why it did not.
    pub(crate) fn fill_ended(&self, failure: Option<&'static str>) {
        let labels = match failure {
            None => vec![("outcome", "committed")],
            Some(reason) => vec![("outcome", "failed"), ("reason", reason)],
        };
        self.fills.get_or_create(&labels).inc();
    }

    pub(crate) fn followed(&self) {
        self.followers.inc();
    }

    pub(crate) fn pruned(&self, images: usize, bytes: u64) {
        self.removed
            .get_or_create(&vec![("by", "prune"), ("kind", "image")])
            .inc_by(images as u64);
        self.removed_bytes.inc_by(bytes);
    }

    pub(crate) fn cleaned(&self, invalid: usize, stalled: usize) {
        self.removed
            .get_or_create(&vec![("by", "clean"), ("kind", "invalid")])
            .inc_by(invalid as u64);
        self.removed
            .get_or_create(&vec![("by", "clean"), ("kind", "stalled")])
            .inc_by(stalled as u64);
    }

    pub(crate) fn health_probed(&self) {
        self.health_probes.inc();
    }

    /// An upstream request timed out in `phase` (`connect`, `response`, `idle`).
    pub(crate) fn upstream_timeout(&self, phase: &'static str) {
        self.upstream_timeouts
            .get_or_create(&vec![("phase", phase)])
            .inc();
    }

    /// A fill asked its upstream again from the byte it had; `answer` is how it was met
    /// (`partial`, `whole`: a 200 whose first bytes were skipped, `refused`).
    pub(crate) fn resumed(&self, answer: &'static str) {
        self.resumes.get_or_create(&vec![("answer", answer)]).inc();
    }

    /// A miss was served through without a fill because `limit` was reached.
    pub(crate) fn fill_declined(&self, limit: &'static str) {
        self.fills_declined
            .get_or_create(&vec![("limit", limit)])
            .inc();
    }

    /// An access check of a download was `decided` (`asked`, `remembered`, `stale`,
    /// `unavailable`).
    pub(crate) fn authorization(&self, decided: &'static str) {
        self.authorization
            .get_or_create(&vec![("decision", decided)])
            .inc();
    }

    /// The text exposition, with the gauges set to the values given now.
    pub(crate) fn render(&self, size: u64, max_size: u64, images: usize, queued: usize) -> String {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.size_bytes.set(gauge(size));
        self.max_size_bytes.set(gauge(max_size));
        self.images.set(gauge(images as u64));
        self.queued.set(gauge(queued as u64));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
