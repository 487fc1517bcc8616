//! [`CacheConfig`]: the cache's options, with Glance's names and defaults, and the names the
//! cache reserves in `image_cache_dir`.

use std::path::PathBuf;
use std::time::Duration;

use super::database::DatabaseUrl;

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

/// The directory under `image_cache_dir` where fills are written.
pub(crate) const INCOMPLETE_DIR: &str = "incomplete";
/// The directory under `image_cache_dir` where failed fills are kept for the cleaner.
pub(crate) const INVALID_DIR: &str = "invalid";

/// Where the cache keeps its records (`image_cache_driver`).
///
/// The image files always live under `image_cache_dir`; the driver holds their attributes
/// (size, hits, times, checksum) and the prefetch queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexDriverKind {
    /// An embedded sled database in `image_cache_dir/image_cache_sqlite_db` (`image_cache_driver
    /// = sled`, or `sqlite`, Glance's name for its embedded driver).
    #[default]
    Sled,
    /// `centralized_db`: the records of every node of a fleet in the cloud's SQL database
    /// (`[database] connection`), in Glance's tables, so any node can tell which nodes hold an
    /// image. Each node still keeps its own embedded index, so a database outage never stops
    /// it; its rows are written behind and converge after an outage.
    Centralized,
}

impl IndexDriverKind {
    /// The name operators write in `image_cache_driver`.
    pub fn name(self) -> &'static str {
        match self {
            IndexDriverKind::Sled => "sled",
            IndexDriverKind::Centralized => "centralized_db",
        }
    }
}

/// Why `name` cannot be the index's directory inside `image_cache_dir`, if it cannot.
pub(crate) fn db_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.contains(['/', '\\']) || matches!(name, "." | "..") {
        Some("must be a plain directory name inside image_cache_dir")
    } else if matches!(name, INCOMPLETE_DIR | INVALID_DIR) {
        Some("must not be incomplete or invalid, the directories the cache keeps its fills in")
    } else {
        None
    }
}

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
    /// Where the records live (`image_cache_driver`; default: sled).
    pub image_cache_driver: IndexDriverKind,
    /// The memory sled may use for its page cache, in bytes (sled's own use can be a few times
    /// this figure).
    pub db_cache_capacity: u64,
    /// The central database of `centralized_db` (`[database] connection`).
    pub database_connection: Option<DatabaseUrl>,
}

impl CacheConfig {
    /// A configuration with Glance's defaults for the cache at `image_cache_dir`.
    #[must_use]
    pub fn new(image_cache_dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            image_cache_dir: image_cache_dir.into(),
            image_cache_sqlite_db: DEFAULT_DB_NAME.to_owned(),
            image_cache_max_size: DEFAULT_MAX_SIZE,
            image_cache_stall_time: DEFAULT_STALL_TIME,
            cache_prefetcher_interval: DEFAULT_PREFETCHER_INTERVAL,
            worker_self_reference_url: None,
            image_cache_driver: IndexDriverKind::default(),
            db_cache_capacity: DEFAULT_DB_CACHE_CAPACITY,
            database_connection: None,
        }
    }

    /// Sets `image_cache_sqlite_db`.
    #[must_use]
    pub fn image_cache_sqlite_db(mut self, name: impl Into<String>) -> Self {
        self.image_cache_sqlite_db = name.into();
        self
    }

    /// Sets `image_cache_max_size`.
    #[must_use]
    pub fn image_cache_max_size(mut self, bytes: u64) -> Self {
        self.image_cache_max_size = bytes;
        self
    }

    /// Sets `image_cache_stall_time`.
    #[must_use]
    pub fn image_cache_stall_time(mut self, stall_time: Duration) -> Self {
        self.image_cache_stall_time = stall_time;
        self
    }

    /// Sets `cache_prefetcher_interval`.
    #[must_use]
    pub fn cache_prefetcher_interval(mut self, interval: Duration) -> Self {
        self.cache_prefetcher_interval = interval;
        self
    }

    /// Sets `worker_self_reference_url`.
    #[must_use]
    pub fn worker_self_reference_url(mut self, url: impl Into<String>) -> Self {
        self.worker_self_reference_url = Some(url.into());
        self
    }

    /// Sets `image_cache_driver`.
    #[must_use]
    pub fn image_cache_driver(mut self, driver: IndexDriverKind) -> Self {
        self.image_cache_driver = driver;
        self
    }

    /// Selects `centralized_db` with the central database at `url` (`[database] connection`).
    #[must_use]
    pub fn centralized_db(mut self, url: DatabaseUrl) -> Self {
        self.image_cache_driver = IndexDriverKind::Centralized;
        self.database_connection = Some(url);
        self
    }

    /// Why this configuration cannot open a cache, if it cannot: `centralized_db` needs
    /// `[database] connection` and `worker_self_reference_url`, as in Glance.
    pub fn problem(&self) -> Option<&'static str> {
        if self.image_cache_driver != IndexDriverKind::Centralized {
            return None;
        }
        if self.database_connection.is_none() {
            Some("image_cache_driver = centralized_db needs the central database: set connection in the [database] section")
        } else if self.worker_self_reference_url.is_none() {
            Some("image_cache_driver = centralized_db needs worker_self_reference_url, this node's URL as the other nodes reach it (as Glance requires)")
        } else {
            None
        }
    }

    /// Sets the sled page-cache capacity.
    #[must_use]
    pub fn db_cache_capacity(mut self, bytes: u64) -> Self {
        self.db_cache_capacity = bytes;
        self
    }

    /// The sled database directory: `image_cache_dir/image_cache_sqlite_db`.
    pub fn db_path(&self) -> PathBuf {
        self.image_cache_dir.join(&self.image_cache_sqlite_db)
    }

    /// Whether `name` is one the cache uses for itself in `image_cache_dir`: the index
    /// (`image_cache_sqlite_db`), `incomplete` or `invalid`. No image of that id is cached.
    pub fn is_reserved_name(&self, name: &str) -> bool {
        let db = self.image_cache_sqlite_db.as_str();
        // The index's name, and names beside it: Glance's SQLite journal (`cache.db-journal`),
        // this cache's index beside Glance's file (`cache.db.sled`).
        let beside_the_index = name
            .strip_prefix(db)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-']));
        beside_the_index || name == INCOMPLETE_DIR || name == INVALID_DIR
    }
}
