//! [`CacheConfig`]: the cache's options, with Glance's names and defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `image_cache_max_size`: 10 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024 * 1024;
/// Default `image_cache_stall_time`: one day.
pub const DEFAULT_STALL_TIME: Duration = Duration::from_secs(86_400);
/// Default `cache_prefetcher_interval`: five minutes.
pub const DEFAULT_PREFETCHER_INTERVAL: Duration = Duration::from_secs(300);
/// Default `image_cache_sqlite_db`: the sled database directory's name.
pub const DEFAULT_DB_NAME: &str = "cache.db";

/// The cache's configuration.
///
/// The fields follow Glance's option names (`image_cache_dir`, `image_cache_sqlite_db`,
/// `image_cache_max_size`, `image_cache_stall_time`, `cache_prefetcher_interval`,
/// `worker_self_reference_url`) and defaults.
///
/// ```
/// use tower_image_cache::CacheConfig;
///
/// let config = CacheConfig::new("/var/lib/glance/image-cache")
///     .max_size(20 * 1024 * 1024 * 1024)
///     .stall_time(std::time::Duration::from_secs(3600));
/// assert_eq!(config.db_path(), std::path::Path::new("/var/lib/glance/image-cache/cache.db"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    image_cache_dir: PathBuf,
    db_name: String,
    max_size: u64,
    stall_time: Duration,
    prefetcher_interval: Duration,
    worker_self_reference_url: Option<String>,
    db_cache_capacity: u64,
}

impl CacheConfig {
    /// A configuration with Glance's defaults for the cache at `image_cache_dir`.
    pub fn new(image_cache_dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            image_cache_dir: image_cache_dir.into(),
            db_name: DEFAULT_DB_NAME.to_owned(),
            max_size: DEFAULT_MAX_SIZE,
            stall_time: DEFAULT_STALL_TIME,
            prefetcher_interval: DEFAULT_PREFETCHER_INTERVAL,
            worker_self_reference_url: None,
            db_cache_capacity: 16 * 1024 * 1024,
        }
    }

    /// `image_cache_sqlite_db`: the name of the sled database directory inside
    /// `image_cache_dir`. It must be a plain name (no path separators).
    pub fn db_name(mut self, name: impl Into<String>) -> Self {
        self.db_name = name.into();
        self
    }

    /// `image_cache_max_size`: the size in bytes the cache is kept under.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// `image_cache_stall_time`: how old an unfinished fill must be before the cleaner removes it.
    pub fn stall_time(mut self, stall_time: Duration) -> Self {
        self.stall_time = stall_time;
        self
    }

    /// `cache_prefetcher_interval`: how often the prefetcher runs over the whole queue.
    pub fn prefetcher_interval(mut self, interval: Duration) -> Self {
        self.prefetcher_interval = interval;
        self
    }

    /// `worker_self_reference_url`: this node's URL, as reported to operators.
    pub fn worker_self_reference_url(mut self, url: impl Into<String>) -> Self {
        self.worker_self_reference_url = Some(url.into());
        self
    }

    /// The memory sled may use for its page cache, in bytes (default 16 MiB; sled's own use can
    /// be a few times this figure).
    pub fn db_cache_capacity(mut self, bytes: u64) -> Self {
        self.db_cache_capacity = bytes;
        self
    }

    /// The cache's base directory.
    pub fn image_cache_dir(&self) -> &Path {
        &self.image_cache_dir
    }

    /// The sled database directory.
    pub fn db_path(&self) -> PathBuf {
        self.image_cache_dir.join(&self.db_name)
    }

    /// The name of the sled database directory.
    pub fn db_name_str(&self) -> &str {
        &self.db_name
    }

    /// The configured `image_cache_max_size`.
    pub fn max_size_bytes(&self) -> u64 {
        self.max_size
    }

    /// The configured `image_cache_stall_time`.
    pub fn stall_time_duration(&self) -> Duration {
        self.stall_time
    }

    /// The configured `cache_prefetcher_interval`.
    pub fn prefetcher_interval_duration(&self) -> Duration {
        self.prefetcher_interval
    }

    /// The configured `worker_self_reference_url`, if any.
    pub fn self_reference_url(&self) -> Option<&str> {
        self.worker_self_reference_url.as_deref()
    }

    /// The configured sled page-cache capacity.
    pub fn db_cache_capacity_bytes(&self) -> u64 {
        self.db_cache_capacity
    }
}
