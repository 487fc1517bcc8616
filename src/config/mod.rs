//! [`CacheConfig`]: the cache's options, with Glance's names and defaults, built in code or read
//! from Glance's own configuration files.

mod database;
mod error;
mod files;
mod ini;
mod logging;
mod options;
mod oslo_ini;
mod server;

pub use database::{DatabaseKind, DatabaseUrl, InvalidDatabaseUrl};
pub use error::ConfigError;
pub use files::database_connection;
#[cfg(feature = "keystone")]
pub(crate) use ini::{read_files, read_section, Setting};
pub use ini::{with_config_dirs, with_glance_files, GLANCE_FILES};
pub use logging::LogOptions;
pub(crate) use options::{db_name_problem, INCOMPLETE_DIR, INVALID_DIR};
pub use options::{
    CacheConfig, IndexDriverKind, DEFAULT_DB_CACHE_CAPACITY, DEFAULT_DB_NAME, DEFAULT_MAX_SIZE,
    DEFAULT_PREFETCHER_INTERVAL, DEFAULT_STALL_TIME,
};
pub use server::{ServerOptions, DEFAULT_BIND_PORT, DEFAULT_PEER_MIN_RATE, PEER_RATE_WINDOW};
