//! What every clone of a [`CacheService`](super::CacheService) shares, and `X-Cache-Status`.

use http::header::{HeaderName, HeaderValue};
use http::Response;

use super::limits::UpstreamLimits;
use super::routes::Routes;
use super::single_flight::Leaders;
use super::tee::WithoutClient;
use crate::metrics::Served;
use crate::store::ImageCache;
use crate::sync::Member;

/// `X-Cache-Status`: `HIT`, `MISS` or `BYPASS`.
pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");

/// How a response came to be, for `X-Cache-Status`: what the metrics count it as.
pub(crate) type CacheStatus = Served;

/// The `X-Cache-Status` of `status`.
fn header_value(status: CacheStatus) -> HeaderValue {
    HeaderValue::from_static(match status {
        CacheStatus::Hit => "HIT",
        CacheStatus::Miss => "MISS",
        CacheStatus::Bypass(_) => "BYPASS",
    })
}

/// What every clone of a [`CacheService`](super::CacheService) shares.
#[derive(Debug)]
pub(crate) struct Settings<A> {
    pub(crate) cache: ImageCache,
    pub(crate) access: A,
    pub(crate) routes: Routes,
    pub(crate) cache_status_header: bool,
    pub(crate) prefetch_range_misses: bool,
    pub(crate) without_client: WithoutClient,
    pub(crate) limits: UpstreamLimits,
    pub(crate) decisions: super::decisions::Decisions,
    /// The caller's extensions the layer's own requests carry.
    pub(crate) carried: super::carried::CarriedTypes,
    /// One permit per fill that may run at once (`max_concurrent_fills`).
    pub(crate) fill_slots: std::sync::Arc<tokio::sync::Semaphore>,
    pub(crate) leaders: Leaders,
    /// Cancelled when the last clone of the service is dropped: fills in flight stop and roll
    /// back rather than outlive the service.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Counts this service among the layer's live ones until it is dropped.
    pub(crate) _member: Member,
}

impl<A> Drop for Settings<A> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl<A> Settings<A> {
    /// Adds `X-Cache-Status` (when enabled).
    pub(crate) fn mark<B>(&self, mut response: Response<B>, status: CacheStatus) -> Response<B> {
        tracing::debug!(
            cache_status = header_value(status).to_str().unwrap_or_default(),
            reason = match status {
                CacheStatus::Bypass(reason) => reason,
                _ => "",
            },
            http_status = response.status().as_u16(),
            "answered"
        );
        self.cache.metrics().served(status);
        super::transform::forbid_transform(&mut response);
        // A refusal tells nothing of what the cache holds.
        let refusal = matches!(response.status().as_u16(), 401 | 403 | 404);
        if self.cache_status_header && !refusal {
            response
                .headers_mut()
                .insert(X_CACHE_STATUS, header_value(status));
        }
        response
    }
}
