//! [`CacheMetrics`]: what a cache has done, as Prometheus counters, gauges and histograms.
//!
//! Every `ImageCache` has its own (the layers, the management routes and the prefetcher sharing
//! it count into it); `ImageCache::render_metrics` writes them in the OpenMetrics text format
//! for a `/metrics` route, and `ImageCache::register_metrics` adds them to an application's own
//! `prometheus_client` registry.

mod decided;
mod timing;
mod upstream;

use std::fmt;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub(crate) use decided::Decided;
pub(crate) use timing::{status_label, Timings};
pub use upstream::{PeerFailure, UpstreamFailure, UpstreamPhase};

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

/// The counters and histograms of one cache (its gauges are read when the metrics are
/// encoded, by the store's collector).
pub(crate) struct CacheMetrics {
    responses: Family<Labels, Counter>,
    // The counters the hit path moves, looked up once: a hit, a chunk never builds a label set.
    hits: Counter,
    misses: Counter,
    bytes: Family<Labels, Counter>,
    bytes_from_cache: Counter,
    bytes_from_upstream: Counter,
    bytes_from_peers: Counter,
    bytes_followed: Counter,
    fill_sources: Family<Labels, Counter>,
    peer_failures: Family<Labels, Counter>,
    fills_started: Counter,
    fills: Family<Labels, Counter>,
    followers: Counter,
    removed: Family<Labels, Counter>,
    removed_bytes: Counter,
    health_probes: Counter,
    upstream_timeouts: Family<Labels, Counter>,
    upstream_errors: Family<Labels, Counter>,
    resumes: Family<Labels, Counter>,
    fills_declined: Family<Labels, Counter>,
    authorization: Family<Labels, Counter>,
    /// `authorization`'s counters, by [`Decided`]: every download moves one.
    decided: [Counter; 4],
    keystone_failures: Family<Labels, Counter>,
    fill_duration: Family<Labels, Histogram, fn() -> Histogram>,
    fill_size: Histogram,
    /// Request duration and time to first byte, by cache status (the server's front records
    /// them; a library user's own middleware may too, through `ImageCache::observe_request`).
    pub(crate) timings: Timings,
}

impl fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheMetrics").finish_non_exhaustive()
    }
}

/// Fill durations, in seconds: from a small image on a LAN to a large one over a WAN.
const FILL_SECONDS: [f64; 13] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn fill_duration_histogram() -> Histogram {
    Histogram::new(FILL_SECONDS)
}

/// Label sets shown at zero from the start, so that `rate()` and alerts see them before the
/// first failure.
fn at_zero(label: &'static str, values: &[&'static str]) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for value in values {
        drop(family.get_or_create(&vec![(label, *value)]));
    }
    family
}

impl Default for CacheMetrics {
    fn default() -> Self {
        let responses = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let fills = Family::<Labels, Counter>::default();
        drop(fills.get_or_create(&vec![("outcome", "committed")]));
        let authorization = Family::<Labels, Counter>::default();
        let decided = Decided::ALL
            .map(|decided| authorization.get_or_create_owned(&vec![("decision", decided.label())]));
        CacheMetrics {
            hits: responses.get_or_create_owned(&vec![("status", "hit")]),
            misses: responses.get_or_create_owned(&vec![("status", "miss")]),
            bytes_from_cache: bytes.get_or_create_owned(&vec![("source", "cache")]),
            bytes_from_upstream: bytes.get_or_create_owned(&vec![("source", "upstream")]),
            bytes_from_peers: bytes.get_or_create_owned(&vec![("source", "peer")]),
            bytes_followed: bytes.get_or_create_owned(&vec![("source", "follow")]),
            fill_sources: at_zero("source", &["upstream", "peer", "follow"]),
            peer_failures: at_zero(
                "reason",
                &["unreachable", "refused", "cut", "unverified", "slow"],
            ),
            responses,
            bytes,
            fills_started: Counter::default(),
            fills,
            followers: Counter::default(),
            removed: Family::default(),
            removed_bytes: Counter::default(),
            health_probes: Counter::default(),
            upstream_timeouts: at_zero("phase", &["connect", "response", "idle"]),
            upstream_errors: at_zero("kind", &["connect", "connection", "status_5xx", "timeout"]),
            resumes: Family::default(),
            fills_declined: Family::default(),
            authorization,
            decided,
            keystone_failures: at_zero("check", &["token_validation", "service_login"]),
            fill_duration: Family::new_with_constructor(fill_duration_histogram),
            // 1 MiB to 64 GiB, by fours.
            fill_size: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1024.0 * 1024.0,
                4.0,
                9,
            )),
            timings: Timings::default(),
        }
    }
}

impl CacheMetrics {
    /// Adds every counter and histogram to `registry` (shared: they go on counting there).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "responses",
            "Responses on image download routes: hit, miss, or bypass with its reason",
            self.responses.clone(),
        );
        registry.register(
            "bytes",
            "Image bytes sent to clients from the cache, and read for fills from the wrapped service (upstream) or a peer node",
            self.bytes.clone(),
        );
        registry.register(
            "fills_started",
            "Fills begun (one upstream read each)",
            self.fills_started.clone(),
        );
        registry.register(
            "fill_sources",
            "Fills by where their first bytes came from: the upstream, a peer node's copy, or a peer node's fill in progress (follow)",
            self.fill_sources.clone(),
        );
        registry.register(
            "peer_failures",
            "Peer nodes that could not fill an image: unreachable, refused (an unexpected status), cut (the body ended early or stalled), or unverified (the copy did not match its checksum)",
            self.peer_failures.clone(),
        );
        registry.register(
            "fills",
            "Fills ended: committed, or failed with the reason",
            self.fills.clone(),
        );
        registry.register(
            "fill_duration_seconds",
            "How long fills took, from the first byte asked to the commit or the failure, by outcome",
            self.fill_duration.clone(),
        );
        registry.register(
            "fill_size_bytes",
            "Sizes of the images fills committed",
            self.fill_size.clone(),
        );
        registry.register(
            "followers",
            "Downloads served by following a fill in progress instead of a read of their own",
            self.followers.clone(),
        );
        registry.register(
            "removed_files",
            "Files removed by prune (images), and by clean (invalid and stalled fills)",
            self.removed.clone(),
        );
        registry.register(
            "pruned_bytes",
            "Bytes of the images prune removed",
            self.removed_bytes.clone(),
        );
        registry.register(
            "health_probes",
            "Disk and index probes of the health check (at most one every few seconds)",
            self.health_probes.clone(),
        );
        registry.register(
            "upstream_timeouts",
            "Upstream requests that timed out, by phase (connect, response, idle)",
            self.upstream_timeouts.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, by kind (connect, connection, status_5xx, timeout)",
            self.upstream_errors.clone(),
        );
        registry.register(
            "fill_resumes",
            "Fills asked again with Range after their upstream body was cut, by how the upstream answered",
            self.resumes.clone(),
        );
        registry.register(
            "fills_declined",
            "Misses served through without caching because of an admission limit, by limit",
            self.fills_declined.clone(),
        );
        registry.register(
            "authorization_decisions",
            "Access checks of downloads: asked upstream, reused from memory, or admitted stale while the upstream failed",
            self.authorization.clone(),
        );
        registry.register(
            "keystone_failures",
            "Keystone checks that could not be made (Keystone unreachable or failing), by check",
            self.keystone_failures.clone(),
        );
        self.timings.register(registry);
    }

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

    /// Bytes a fill read from its `source` (`upstream`, `peer` or `follow`).
    pub(crate) fn bytes_filled(&self, source: &'static str, bytes: u64) {
        match source {
            "peer" => self.bytes_from_peers.inc_by(bytes),
            "follow" => self.bytes_followed.inc_by(bytes),
            _ => self.bytes_from_upstream.inc_by(bytes),
        };
    }

    /// A fill began reading from `source` (`upstream`, `peer` or `follow`).
    pub(crate) fn fill_source(&self, source: &'static str) {
        self.fill_sources
            .get_or_create(&vec![("source", source)])
            .inc();
    }

    pub(crate) fn peer_failure(&self, failure: PeerFailure) {
        self.peer_failures
            .get_or_create(&vec![("reason", failure.as_str())])
            .inc();
    }

    pub(crate) fn fill_started(&self) {
        self.fills_started.inc();
    }

    /// A fill ended after `seconds` with `size` bytes written: `None` when it committed, else
    /// why it did not.
    pub(crate) fn fill_ended(&self, failure: Option<&'static str>, seconds: f64, size: u64) {
        let labels = match failure {
            None => vec![("outcome", "committed")],
            Some(reason) => vec![("outcome", "failed"), ("reason", reason)],
        };
        self.fills.get_or_create(&labels).inc();
        let outcome = if failure.is_none() {
            "committed"
        } else {
            "failed"
        };
        self.fill_duration
            .get_or_create(&vec![("outcome", outcome)])
            .observe(seconds);
        if failure.is_none() {
            self.fill_size.observe(size as f64);
        }
    }

    /// An upstream request failed: `kind` is `connect`, `connection`, `status_5xx` or `timeout`.
    pub(crate) fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&vec![("kind", kind)])
            .inc();
    }

    /// A failure of a request to the upstream, told by a service in front of the cache.
    pub(crate) fn upstream_failure(&self, failure: UpstreamFailure) {
        match failure {
            UpstreamFailure::Connect => self.upstream_error("connect"),
            UpstreamFailure::Connection => self.upstream_error("connection"),
            UpstreamFailure::ServerError => self.upstream_error("status_5xx"),
            UpstreamFailure::Timeout(phase) => self.upstream_timeout(phase.as_str()),
        }
    }

    /// A Keystone `check` (`token_validation`, `service_login`) could not be made.
    pub(crate) fn keystone_failure(&self, check: &'static str) {
        self.keystone_failures
            .get_or_create(&vec![("check", check)])
            .inc();
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
        self.upstream_error("timeout");
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

    /// An access check of a download was `decided`.
    pub(crate) fn authorization(&self, decided: Decided) {
        self.decided[decided as usize].inc();
    }
}
