//! The cache's metrics as a scrape reads them: its counters and histograms, and gauges read at
//! that moment (size, images, queue, fills in progress, the central database, the process).

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
#[cfg(feature = "centralized-db")]
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::cache::{ImageCache, Inner};
use super::error::StoreError;
use crate::metrics::{PeerFailure, UpstreamFailure};

impl ImageCache {
    /// What the cache has done and holds, in the OpenMetrics text format for a `/metrics`
    /// route: the `image_cache_*` series (those `register_metrics` adds to a registry), and
    /// the process's `process_resident_memory_bytes` and `process_open_fds`. Reads the queue
    /// from the index: call it off the runtime.
    pub fn render_metrics(&self) -> Result<String, StoreError> {
        // A queue that cannot be read fails the scrape (the caller answers 503), as it would
        // leave a gauge out.
        self.queued_images()?;
        let mut registry = Registry::default();
        self.register_into(&mut registry);
        registry.register_collector(Box::new(ProcessGauges));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        Ok(text)
    }

    /// Adds this cache's metrics, as `image_cache_*`, to an application's own
    /// `prometheus_client` registry, so one
    /// `/metrics` route serves both. The counters and histograms go on counting there; the
    /// gauges are read from the cache at each scrape (a cache dropped since shows none).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use prometheus_client::registry::Registry;
    /// # let dir = tempfile::tempdir()?;
    /// let cache = tower_image_cache::ImageCache::open(tower_image_cache::CacheConfig::new(dir.path()))?;
    /// let mut registry = Registry::default();
    /// // ... the application's own metrics ...
    /// cache.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(text.contains("image_cache_size_bytes 0"));
    /// # Ok(()) }
    /// ```
    ///
    /// Behind the feature `prometheus-registry`: its argument is prometheus-client's (0.26)
    /// `Registry`, which follows that crate's versions.
    #[cfg(feature = "prometheus-registry")]
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.register_into(registry);
    }

    fn register_into(&self, registry: &mut Registry) {
        let ours = registry.sub_registry_with_prefix("image_cache");
        self.inner.metrics.register(ours);
        ours.register_collector(Box::new(CacheGauges {
            cache: std::sync::Arc::downgrade(&self.inner),
        }));
    }

    /// Records one response's timings in `image_cache_request_duration_seconds` and
    /// `image_cache_time_to_first_byte_seconds`: `cache_status` is its `X-Cache-Status`
    /// (`None` for a response without one), `first_byte` and `total` are seconds from its
    /// arrival to its head and to its last body byte. The cache server's front records every
    /// request; an application records from its own access-log middleware.
    pub fn observe_request(&self, cache_status: Option<&str>, first_byte: f64, total: f64) {
        let label = crate::metrics::status_label(cache_status);
        self.inner.metrics.timings.observe(label, first_byte, total);
    }
}

/// The gauges read from the cache at each scrape.
#[derive(Debug)]
struct CacheGauges {
    cache: Weak<Inner>,
}

/// A gauge of a whole number (bytes, counts), or of seconds.
fn gauge<N>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Clone,
{
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn whole(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Collector for CacheGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.cache.upgrade() else {
            return Ok(());
        };
        let catalog = &inner.catalog;
        let e = &mut encoder;
        gauge(
            e,
            "size_bytes",
            "Bytes of the committed images",
            whole(catalog.total_size()),
        )?;
        let max = whole(inner.config.image_cache_max_size);
        gauge(e, "max_size_bytes", "image_cache_max_size", max)?;
        gauge(e, "images", "Committed images", whole(catalog.len()))?;
        if let Ok(queued) = catalog.driver().queued() {
            let help = "Images queued for the prefetcher";
            gauge(e, "queued_images", help, whole(queued.len()))?;
        }
        // The filesystem under image_cache_dir: what the cache may still grow into.
        if let Ok(fs) = rustix::fs::statvfs(&inner.layout.base) {
            let block = fs.f_frsize.max(1);
            let help = "Bytes available to the cache's user on the filesystem of image_cache_dir";
            let avail = whole(fs.f_bavail.saturating_mul(block));
            gauge(e, "filesystem_avail_bytes", help, avail)?;
            let help = "Size in bytes of the filesystem of image_cache_dir";
            gauge(
                e,
                "filesystem_size_bytes",
                help,
                whole(fs.f_blocks.saturating_mul(block)),
            )?;
        }
        let filling = whole(inner.fills.progress().len());
        gauge(e, "fills_in_progress", "Fills running now", filling)?;
        #[cfg(feature = "centralized-db")]
        if let Some(fleet) = &inner.fleet {
            let up = i64::from(fleet.is_reachable());
            let help = "1 when the central database (centralized_db) answered the last round";
            gauge(e, "central_database_up", help, up)?;
            let help =
                "Seconds the oldest change not yet written to the central database has waited";
            gauge(
                e,
                "replication_lag_seconds",
                help,
                fleet.lag().as_secs_f64(),
            )?;
            let metric = e.encode_descriptor(
                "central_database_failed_rounds",
                "Rounds with the central database that failed (each is retried with backoff)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(fleet.failed_rounds()).encode(metric)?;
        }
        let mut metric = e.encode_descriptor(
            "build_info",
            "The crate's version, as a label; always 1",
            None,
            MetricType::Gauge,
        )?;
        let labels = vec![("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1).encode(metric.encode_family(&labels)?)?;
        Ok(())
    }
}

/// The process's memory and open files, as Prometheus's client libraries name them.
#[derive(Debug)]
struct ProcessGauges;

impl Collector for ProcessGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Linux: VmRSS (kB) in /proc/self/status, descriptors in /proc/self/fd.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<i64>()
                    .ok()
            });
        if let Some(kb) = rss_kb {
            let help = "Resident memory size in bytes";
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                help,
                kb * 1024,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let help = "Number of open file descriptors";
            gauge(&mut encoder, "process_open_fds", help, whole(fds.count()))?;
        }
        Ok(())
    }
}

/// Counts kept for a service beside the cache, in the cache's metrics.
impl ImageCache {
    /// Counts a failed request to the image API behind the cache into this cache's metrics
    /// (`image_cache_upstream_errors_total`, `image_cache_upstream_timeouts_total`): for a
    /// service in front of the cache that talks to that API itself, as a caching proxy does.
    pub fn count_upstream_failure(&self, failure: UpstreamFailure) {
        self.metrics().upstream_failure(failure);
    }

    /// Counts a peer cache node that could not fill an image
    /// (`image_cache_peer_failures_total{reason}`): for a service behind the cache that fills
    /// from other nodes of a fleet.
    pub fn count_peer_failure(&self, failure: PeerFailure) {
        self.metrics().peer_failure(failure);
    }
}
