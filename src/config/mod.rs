//! [`CacheConfig`]: the cache's options, with Glance's names and defaults.

use std::path::PathBuf;
use std::time::Duration;

mod files;

pub use files::ConfigError;

/// Default `image_cache_max_size`: 10 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024 * 1024;
/// Default `image_cache_stall_time`: one day.
pub const DEFAULT_STALL_TIME: Duration = Duration::from_secs(86_400);
/// Default `cache_prefetcher_interval`: five minutes.
pub const DEFAULT_PREFETCHER_INTERVAL: Duration = Duration::from_secs(300);
/// Default `image_cache_sqlite_db`: the sled database directory's name.
pub const DEFAULT_DB_NAME: &str = "cache.db";
/// Default sled page-cache capacity: 16 MiB.
pub const DEFAULT_DB_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// The cache's configuration.
///
/// The fields are Glance's options, with Glance's names and defaults; each has a builder
/// method of the same name.
///
/// ```
/// use std::time::Duration;
/// use tower_image_cache::CacheConfig;
///
/// let config = CacheConfig::new("/var/lib/glance/image-cache")
///     .image_cache_max_size(20 * 1024 * 1024 * 1024)
///     .image_cache_stall_time(Duration::from_secs(3600));
/// assert_eq!(config.image_cache_sqlite_db, "cache.db");
/// assert_eq!(config.db_path(), std::path::Path::new("/var/lib/glance/image-cache/cache.db"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The base directory of the cache (required).
    pub image_cache_dir: PathBuf,
    /// The name of the sled database directory inside `image_cache_dir` (Glance's option name,
    /// kept so existing configuration files work). A plain name, no path separators.
    pub image_cache_sqlite_db: String,
    /// The size in bytes the cache is kept under.
    pub image_cache_max_size: u64,
    /// How old an unfinished fill must be before the cleaner removes it.
    pub image_cache_stall_time: Duration,
    /// How often the prefetcher runs over the whole queue.
    pub cache_prefetcher_interval: Duration,
    /// This node's URL, as reported to operators.
    pub worker_self_reference_url: Option<String>,
    /// The memory sled may use for its page cache, in bytes (sled's own use can be a few times
    /// this figure).
    pub db_cache_capacity: u64,
}

impl CacheConfig {
    /// A configuration with Glance's defaults for the cache at `image_cache_dir`.
    pub fn new(image_cache_dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            image_cache_dir: image_cache_dir.into(),
            image_cache_sqlite_db: DEFAULT_DB_NAME.to_owned(),
            image_cache_max_size: DEFAULT_MAX_SIZE,
            image_cache_stall_time: DEFAULT_STALL_TIME,
            cache_prefetcher_interval: DEFAULT_PREFETCHER_INTERVAL,
            worker_self_reference_url: None,
            db_cache_capacity: DEFAULT_DB_CACHE_CAPACITY,
        }
    }

    /// Sets `image_cache_sqlite_db`.
    pub fn image_cache_sqlite_db(mut self, name: impl Into<String>) -> Self {
        self.image_cache_sqlite_db = name.into();
        self
    }

    /// Sets `image_cache_max_size`.
    pub fn image_cache_max_size(mut self, bytes: u64) -> Self {
        self.image_cache_max_size = bytes;
        self
    }

    /// Sets `image_cache_stall_time`.
    pub fn image_cache_stall_time(mut self, stall_time: Duration) -> Self {
        self.image_cache_stall_time = stall_time;
        self
    }

    /// Sets `cache_prefetcher_interval`.
    pub fn cache_prefetcher_interval(mut self, interval: Duration) -> Self {
        self.cache_prefetcher_interval = interval;
        self
    }

    /// Sets `worker_self_reference_url`.
    pub fn worker_self_reference_url(mut self, url: impl Into<String>) -> Self {
        self.worker_self_reference_url = Some(url.into());
        self
    }

    /// Sets the sled page-cache capacity.
    pub fn db_cache_capacity(mut self, bytes: u64) -> Self {
        self.db_cache_capacity = bytes;
        self
    }

    /// The sled database directory: `image_cache_dir/image_cache_sqlite_db`.
    pub fn db_path(&self) -> PathBuf {
        self.image_cache_dir.join(&self.image_cache_sqlite_db)
    }
}
