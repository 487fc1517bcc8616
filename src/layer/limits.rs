//! How long the cache waits for the wrapped service, how often a cut fill asks again, and how
//! many fills may run at once.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};

use crate::body::CacheBody;
use crate::error_page::{ErrorFormat, Refusal};

/// Until the response head, as nginx's `proxy_read_timeout`.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two body bytes.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Ranged requests a cut fill makes before it gives up.
pub(crate) const DEFAULT_RESUME_ATTEMPTS: u32 = 3;
/// Fills running at once; misses beyond are served through uncached.
pub(crate) const DEFAULT_MAX_CONCURRENT_FILLS: usize = 16;

/// The limits on the wrapped service (the upstream) a [`CacheLayer`](super::CacheLayer) keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamLimits {
    /// Until the response head of a download or an access check; `None`: no limit.
    pub(crate) response_timeout: Option<Duration>,
    /// Between two frames of a fill's body; `None`: no limit.
    pub(crate) idle_timeout: Option<Duration>,
    /// Ranged requests after a cut, per fill.
    pub(crate) resume_attempts: u32,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            resume_attempts: DEFAULT_RESUME_ATTEMPTS,
        }
    }
}

/// Runs `future` within `limit` (when there is one); `None` when it ran out.
pub(crate) async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    future: F,
) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await.ok(),
        None => Some(future.await),
    }
}

/// `504 Gateway Timeout` in Glance's error format: the image API did not answer `what` within
/// `limit`.
pub(crate) fn gateway_timeout<B>(
    request: &HeaderMap,
    what: &str,
    limit: Duration,
) -> Response<CacheBody<B>> {
    let message = format!(
        "The image API did not answer {what} within {} s. Try again later.",
        limit.as_secs_f64()
    );
    Refusal::new(StatusCode::GATEWAY_TIMEOUT, message).into_response(ErrorFormat::of(request))
}

/// The pause before the `attempt`th ranged request of a cut fill (1: 250 ms, then doubling,
/// at most 4 s): a Glance restarting gets a moment, a flapping link is not hammered.
pub(crate) fn resume_backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.saturating_sub(1).min(4))
}
