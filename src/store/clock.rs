//! The cache's clock: times are epoch seconds, as Glance records them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in epoch seconds.
pub(crate) fn now() -> f64 {
    epoch_seconds(SystemTime::now())
}

/// `time` in epoch seconds (0 for a time before the epoch).
pub(crate) fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
