//! Request timings: how long a response took to start and to end, by cache status.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds from a 4 KiB hit on a LAN to a 10 GiB image on a slow link.
const REQUEST_SECONDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0,
];

/// Seconds until the response head: a hit's metadata check, a miss's upstream answer.
const FIRST_BYTE_SECONDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_SECONDS)
}

fn first_byte_histogram() -> Histogram {
    Histogram::new(FIRST_BYTE_SECONDS)
}

/// The `cache_status` label's values.
const STATUSES: [&str; 4] = ["hit", "miss", "bypass", "none"];

/// `image_cache_request_duration_seconds` and `image_cache_time_to_first_byte_seconds`.
#[derive(Clone)]
pub(crate) struct Timings {
    duration: Histograms,
    first_byte: Histograms,
    /// Each status's (duration, first byte) histograms, looked up once: a request builds no
    /// label set.
    by_status: [(Histogram, Histogram); 4],
}

impl Default for Timings {
    fn default() -> Self {
        let duration: Histograms = Family::new_with_constructor(request_histogram);
        let first_byte: Histograms = Family::new_with_constructor(first_byte_histogram);
        let by_status = STATUSES.map(|status| {
            let labels = vec![("cache_status", status)];
            (
                duration.get_or_create_owned(&labels),
                first_byte.get_or_create_owned(&labels),
            )
        });
        Timings {
            duration,
            first_byte,
            by_status,
        }
    }
}

/// The `cache_status` label of an `X-Cache-Status` value (`none` for a response without one:
/// management, metadata, uploads).
pub(crate) fn status_label(header: Option<&str>) -> &'static str {
    match header {
        Some(s) if s.eq_ignore_ascii_case("hit") => "hit",
        Some(s) if s.eq_ignore_ascii_case("miss") => "miss",
        Some(s) if s.eq_ignore_ascii_case("bypass") => "bypass",
        _ => "none",
    }
}

impl Timings {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let histograms = [
            (
                "request_duration_seconds",
                "Requests from their arrival to their last body byte sent, by cache status",
                &self.duration,
            ),
            (
                "time_to_first_byte_seconds",
                "Requests from their arrival to their response head, by cache status",
                &self.first_byte,
            ),
        ];
        for (name, help, family) in histograms {
            registry.register(name, help, family.clone());
        }
    }

    /// A response of `cache_status` (see [`status_label`]) started after `first_byte` and
    /// ended after `total` seconds.
    pub(crate) fn observe(&self, cache_status: &'static str, first_byte: f64, total: f64) {
        let at = STATUSES
            .iter()
            .position(|s| *s == cache_status)
            .unwrap_or(3);
        let (duration, first) = &self.by_status[at];
        first.observe(first_byte);
        duration.observe(total);
    }
}
