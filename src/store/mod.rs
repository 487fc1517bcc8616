//! The cache engine: image files under `image_cache_dir`, and their attributes in an index.
//!
//! [`ImageCache`] is Glance's `ImageCache` facade re-made: its methods are the operator's verbs
//! (`is_cached`, `cached_images`, `delete_cached_image`, ...) plus the fill cycle
//! ([`ImageCache::begin_fill`] → [`FillWriter::write`] → [`FillWriter::finish`]) and
//! [`ImageCache::open_for_read`]. Nothing here knows of HTTP.
//!
//! The layout on disk:
//!
//! ```text
//! <image_cache_dir>/
//!   <image_id>        a committed, verified image
//!   incomplete/<id>   a fill being written; never served as a whole image
//!   invalid/<id>      a fill that failed verification or was abandoned
//!   cache.db/         the sled index (image_cache_sqlite_db)
//! ```
//!
//! The files are the truth for bytes and the index for attributes; [`ImageCache::open`]
//! reconciles the two. The index sits behind a driver seam (`driver.rs`; sled is the embedded
//! driver, `sled_driver.rs`), and an in-memory catalog mirrors it so lookups on the hit path
//! never touch it.
//!
//! This file only declares and re-exports. Inside the module each file uses only files listed
//! before it here (`cache.rs` holds the handle; the verb files add to it):
//!
//! | file | holds |
//! |---|---|
//! | `clock.rs` | epoch-seconds time |
//! | `layout.rs` | paths under `image_cache_dir`, file removal |
//! | `fs.rs` | `FillIo`: a fill's file steps, to fail in tests (feature `fuzzing`) |
//! | `direct.rs` | a fill's file written with direct I/O, in aligned blocks |
//! | `block_sums.rs` | the CRC-32 of each block of a committed file, in an attribute of it |
//! | `chunks.rs` | the pooled buffers hits and followers read into |
//! | `driver.rs` | the index driver seam, [`IndexError`] |
//! | `sled_driver.rs` | the sled driver |
//! | `central_sql.rs` | the central index's SQL, per server (feature `centralized-db`) |
//! | `central_db.rs` | the central database's pool and statements |
//! | `central_fills.rs` | the fleet's fills in flight (which node reads an image now) and zones |
//! | `converge.rs` | a node's rows made equal to its local records |
//! | `replicator.rs` | writing a node's records behind to the central database |
//! | `central_driver.rs` | the `centralized_db` driver: sled, mirrored by the replicator |
//! | `digest.rs` | the digest implementations |
//! | `verify.rs` | [`Expected`], [`Verification`], the digests |
//! | `error.rs` | [`StoreError`], [`FillError`], [`FillStep`], [`BlockingError`] |
//! | `record.rs` | [`CachedImage`], [`FillProgress`] |
//! | `small_images.rs` | the bytes of small images, kept after their first hit |
//! | `catalog.rs` | the in-memory mirror of the index, ordered writes, hit counters |
//! | `progress.rs` | running fills and how they end ([`FillEnd`], [`FillOutcome`]) |
//! | `recent.rs` | a followed fill's latest chunks, which its followers take from memory |
//! | `housekeeping.rs` | the background thread (hit flushes, prunes) |
//! | `live_metrics.rs` | `/metrics`: the counters, and the gauges read when scraped |
//! | `reconcile.rs` | index ↔ files at open |
//! | `open_index.rs` | opening the index `image_cache_driver` names; a node's fleet link |
//! | `cache.rs` | [`ImageCache`]: open, lookups, deletes |
//! | `fill.rs`, `read.rs`, `checked.rs`, `follow.rs`, `maintenance.rs`, `queue.rs` | the verbs |
//! | `fleet.rs` | [`Fleet`]: the nodes of a central database (feature `centralized-db`) |
//! | `fleet_fills.rs` | the fleet's fill claims, for all of it or one zone, and nodes' zones |
//!
//! ```
//! use tower_image_cache::store::{Expected, ImageCache};
//! use tower_image_cache::{CacheConfig, ImageId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let cache = ImageCache::open(CacheConfig::new(dir.path()))?;
//! let id = ImageId::new("cirros")?;
//!
//! let mut fill = cache.begin_fill(&id, Expected::default().size(5))?;
//! fill.write(b"hello")?;
//! let record = fill.finish()?;
//! assert_eq!(record.size, 5);
//! assert!(cache.is_cached(&id));
//! assert!(dir.path().join("cirros").is_file());
//! # Ok(()) }
//! ```

mod block_sums;
mod cache;
mod catalog;
#[cfg(feature = "centralized-db")]
mod central_db;
#[cfg(feature = "centralized-db")]
mod central_driver;
#[cfg(feature = "centralized-db")]
mod central_error;
#[cfg(feature = "centralized-db")]
mod central_fills;
#[cfg(feature = "centralized-db")]
mod central_sql;
mod checked;
mod chunks;
mod clock;
#[cfg(feature = "centralized-db")]
mod converge;
mod digest;
mod direct;
mod driver;
mod error;
mod fill;
#[cfg(feature = "centralized-db")]
mod fleet;
#[cfg(feature = "centralized-db")]
mod fleet_fills;
mod follow;
mod fs;
mod glance_import;
mod housekeeping;
mod layout;
mod live_metrics;
mod maintenance;
#[cfg(test)]
pub(crate) mod memory_driver;
mod open_index;
mod progress;
mod queue;
mod read;
mod recent;
mod reconcile;
mod record;
#[cfg(feature = "centralized-db")]
mod replicator;
mod sled_driver;
mod small_images;
#[cfg(test)]
mod tests;
mod verify;

pub use crate::metrics::{PeerFailure, UpstreamFailure, UpstreamPhase};
pub use cache::ImageCache;
pub use checked::CheckedReader;
pub use driver::IndexError;
pub use error::{BlockingError, FillError, FillStep, StoreError};
pub use fill::FillWriter;
#[cfg(feature = "centralized-db")]
pub use fleet::{Fleet, FleetError, FleetImage};
#[cfg(feature = "centralized-db")]
pub use fleet_fills::{check_zone_name, FillClaim, FillScope, FILL_CLAIM_LIFETIME, ZONE_NAME_MAX};
pub use follow::FillFollower;
#[cfg(feature = "fuzzing")]
pub use fs::{FillIo, IndexStep, StdFillIo};
#[cfg(all(test, not(feature = "fuzzing")))]
pub(crate) use fs::{FillIo, StdFillIo};
pub use maintenance::{Cleaned, Pruned};
pub use progress::{FillEnd, FillOutcome};
pub(crate) use read::CachedEntry;
pub use read::ImageReader;
pub use record::{CachedImage, FillProgress};
pub use verify::{Expected, Verification};
