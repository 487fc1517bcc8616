//! The cache engine: image files under `image_cache_dir` and their attributes in sled.
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
//!   cache.db/         the sled database (image_cache_sqlite_db)
//! ```
//!
//! The files are the truth for bytes and sled for attributes; [`ImageCache::open`] reconciles
//! the two. The in-memory map mirrors sled so lookups on the hit path never touch the database.
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

mod fill;
mod follow;
mod fs;
mod housekeeping;
mod index;
mod maintenance;
mod queue;
pub(crate) mod read;
mod reconcile;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::{CacheConfig, ImageId};

pub use fill::{Expected, FillEnd, FillError, FillOutcome, FillWriter, Verification};
pub use follow::FillFollower;
pub use fs::{FillIo, IndexStep, StdFillIo};
pub use maintenance::{Cleaned, Pruned};
pub use read::ImageReader;

use fill::FillState;
use fs::Layout;
use housekeeping::Housekeeper;
use index::{Entry, Index};

/// A cached image as operators see it: the record of `GET /v2/cache`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CachedImage {
    /// The image id.
    pub image_id: String,
    /// Complete deliveries served from the cache.
    pub hits: u64,
    /// When it was last served (or committed), in epoch seconds.
    pub last_accessed: f64,
    /// When it entered the cache, in epoch seconds.
    pub last_modified: f64,
    /// Its size in bytes.
    pub size: u64,
    /// The MD5 of its bytes as lowercase hex, when known.
    #[serde(skip)]
    pub checksum: Option<String>,
}

impl CachedImage {
    fn new(id: &ImageId, entry: &Entry) -> Self {
        CachedImage {
            image_id: id.to_string(),
            hits: entry.hits,
            last_accessed: entry.last_accessed,
            last_modified: entry.last_modified,
            size: entry.size,
            checksum: entry.md5.map(hex::encode),
        }
    }
}

/// Errors of the store's own operations (opening, deleting).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("cache file operation failed: {0}")]
    Io(#[from] std::io::Error),
    /// The sled index failed (another process may hold it).
    #[error("cache index failed: {0}")]
    Index(#[from] sled::Error),
    /// Another process (a running server) holds the cache's database.
    #[error("the cache index is held by another process (is the API server running?): {0}")]
    Locked(sled::Error),
    /// The configuration cannot describe a cache.
    #[error("invalid cache configuration: {0}")]
    InvalidConfig(String),
}

/// A handle on the cache. Cheap to clone; all clones share one cache. When the last clone is
/// dropped, the cache's background thread is stopped before the drop returns, so the directory
/// (and sled's lock on it) is free to open again at once.
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
    _last_handle: Arc<LastHandle>,
}

/// Shared by every `ImageCache` handle (not by the readers, writers and threads inside).
struct LastHandle {
    cache: std::sync::Weak<Inner>,
}

impl Drop for LastHandle {
    fn drop(&mut self) {
        // The background thread may hold the cache for a moment (a hit flush): stop it and wait,
        // so the cache is not closed later, on that thread.
        if let Some(inner) = self.cache.upgrade() {
            inner.housekeeper.stop();
        }
    }
}

struct Inner {
    config: CacheConfig,
    layout: Layout,
    io: Arc<dyn FillIo>,
    index: Index,
    /// Mirrors the sled tree. Every sled mutation of an entry happens while this lock is held,
    /// so sled never sees a stale write land after a newer one.
    entries: RwLock<HashMap<ImageId, Entry>>,
    fills: Mutex<HashMap<ImageId, Arc<FillState>>>,
    /// Woken when an image is queued, so a prefetcher fetches it at once.
    queued: tokio::sync::Notify,
    /// How many fills are running; watched by [`ImageCache::idle`].
    running_fills: tokio::sync::watch::Sender<usize>,
    housekeeper: Housekeeper,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("image_cache_dir", &self.inner.layout.base)
            .finish_non_exhaustive()
    }
}

impl ImageCache {
    /// Opens (creating when needed) the cache described by `config`.
    ///
    /// Reconciles the index with the files: entries without a file are dropped, committed files
    /// without an entry are adopted, a committed file whose size disagrees with its entry is
    /// removed. A database sled cannot read is moved into `invalid/` and rebuilt from the files.
    /// Fails only when the directory cannot be created or another process holds the database.
    pub fn open(config: CacheConfig) -> Result<Self, StoreError> {
        Self::open_with_io(config, Arc::new(StdFillIo))
    }

    /// Like [`open`](Self::open), with the file operations of fills supplied by `io` (used to
    /// inject faults in tests).
    pub fn open_with_io(config: CacheConfig, io: Arc<dyn FillIo>) -> Result<Self, StoreError> {
        let db_name = config.image_cache_sqlite_db.clone();
        let db_name = db_name.as_str();
        if db_name.is_empty()
            || db_name.contains(['/', '\\'])
            || matches!(db_name, "." | ".." | "incomplete" | "invalid")
        {
            return Err(StoreError::InvalidConfig(format!(
                "image_cache_sqlite_db must be a plain directory name inside image_cache_dir, not {db_name:?}"
            )));
        }
        let layout = Layout::new(&config.image_cache_dir);
        layout.create_dirs()?;
        let (index, loaded) =
            Index::open_or_rebuild(&config.db_path(), config.db_cache_capacity, &layout.invalid)
                .map_err(|err| match index::is_lock_conflict(&err) {
                    true => StoreError::Locked(err),
                    false => StoreError::Index(err),
                })?;
        let entries = reconcile::reconcile(&layout, db_name, &index, loaded)?;
        let inner = Arc::new_cyclic(|weak| Inner {
            config,
            layout,
            io,
            index,
            entries: RwLock::new(entries),
            fills: Mutex::new(HashMap::new()),
            queued: tokio::sync::Notify::new(),
            running_fills: tokio::sync::watch::Sender::new(0),
            housekeeper: Housekeeper::start(weak.clone()),
        });
        let last_handle = Arc::new(LastHandle {
            cache: Arc::downgrade(&inner),
        });
        Ok(ImageCache {
            inner,
            _last_handle: last_handle,
        })
    }

    /// The configuration the cache was opened with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Whether `id` is a name the cache uses for itself in `image_cache_dir`: the sled database
    /// (`image_cache_sqlite_db`), `incomplete` or `invalid`. Such an image is never cached, nor
    /// queued; the layer passes its downloads through and the management routes refuse it.
    pub fn is_reserved(&self, id: &ImageId) -> bool {
        let name = id.as_str();
        name == self.inner.config.image_cache_sqlite_db || name == "incomplete" || name == "invalid"
    }

    /// Whether a committed copy of `id` is in the cache.
    pub fn is_cached(&self, id: &ImageId) -> bool {
        self.inner.read_entries().contains_key(id)
    }

    /// Whether a fill of `id` is running.
    pub fn is_filling(&self, id: &ImageId) -> bool {
        lock(&self.inner.fills).contains_key(id)
    }

    /// The record of one cached image.
    pub fn cached_image(&self, id: &ImageId) -> Option<CachedImage> {
        let entries = self.inner.read_entries();
        entries.get(id).map(|entry| CachedImage::new(id, entry))
    }

    /// The size of a cached image, without building its record (a hit's first question).
    pub(crate) fn cached_image_size(&self, id: &ImageId) -> Option<u64> {
        self.inner.read_entries().get(id).map(|entry| entry.size)
    }

    /// Every cached image, least recently accessed first.
    pub fn cached_images(&self) -> Vec<CachedImage> {
        let mut records: Vec<CachedImage> = {
            let entries = self.inner.read_entries();
            entries
                .iter()
                .map(|(id, e)| CachedImage::new(id, e))
                .collect()
        };
        records.sort_by(|a, b| {
            a.last_accessed
                .total_cmp(&b.last_accessed)
                .then_with(|| a.image_id.cmp(&b.image_id))
        });
        records
    }

    /// The total size of the committed images, in bytes.
    pub fn size(&self) -> u64 {
        self.inner.total_size()
    }

    /// Removes `id` from the cache. A fill of `id` that is still running is cancelled: it will
    /// not commit. Returns whether a committed image was removed.
    pub fn delete_cached_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        self.inner.cancel_fill(id);
        Ok(!self.inner.remove_committed([(id, None)])?.is_empty())
    }

    /// Removes every committed image and cancels every running fill. Returns how many images
    /// were removed.
    pub fn delete_all_cached_images(&self) -> Result<usize, StoreError> {
        let filling: Vec<ImageId> = lock(&self.inner.fills).keys().cloned().collect();
        for id in &filling {
            self.inner.cancel_fill(id);
        }
        let ids: Vec<ImageId> = self.inner.read_entries().keys().cloned().collect();
        Ok(self
            .inner
            .remove_committed(ids.iter().map(|id| (id, None)))?
            .len())
    }

    /// Runs a store operation on tokio's blocking pool (the store's calls touch files and
    /// sled); a failure, or a panic of the operation, comes back as its message.
    pub async fn blocking<T, E>(
        &self,
        work: impl FnOnce(&ImageCache) -> Result<T, E> + Send + 'static,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let cache = self.clone();
        match tokio::task::spawn_blocking(move || work(&cache)).await {
            Ok(done) => done.map_err(|err| err.to_string()),
            Err(join) => Err(format!("the cache operation did not finish: {join}")),
        }
    }

    /// Resolves once no fill is running (each one committed or rolled back).
    pub async fn idle(&self) {
        let mut running = self.inner.running_fills.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = running.wait_for(|count| *count == 0).await;
    }

    /// Resolves once no fill of `id` is running.
    pub async fn fill_settled(&self, id: &ImageId) {
        let mut running = self.inner.running_fills.subscribe();
        let _ = running.wait_for(|_| !self.is_filling(id)).await;
    }

    /// Writes the hit counters gathered in memory to sled now (they are otherwise written
    /// about once a second).
    pub fn flush_hits(&self) -> Result<(), StoreError> {
        self.inner.flush_hits()
    }
}

impl Inner {
    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ImageId, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ImageId, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn total_size(&self) -> u64 {
        self.read_entries().values().map(|e| e.size).sum()
    }

    fn cancel_fill(&self, id: &ImageId) {
        let fill = lock(&self.fills).get(id).cloned();
        if let Some(fill) = fill {
            fill.cancel();
        }
    }

    /// Removes the entries and files of `victims` (each only if its generation is still the
    /// given one, when one is given); returns the entries removed.
    fn remove_committed<'a>(
        &self,
        victims: impl IntoIterator<Item = (&'a ImageId, Option<u64>)>,
    ) -> Result<Vec<Entry>, StoreError> {
        let removed: Vec<(&ImageId, Entry)> = {
            let mut entries = self.write_entries();
            let mut removed = Vec::new();
            for (id, generation) in victims {
                let current = entries
                    .get(id)
                    .is_some_and(|e| generation.is_none_or(|g| g == e.generation));
                if current {
                    removed.extend(entries.remove(id).map(|entry| (id, entry)));
                }
            }
            self.index.remove_all(removed.iter().map(|(id, _)| *id))?;
            removed
        };
        let files: Vec<_> = removed
            .iter()
            .map(|(id, _)| self.layout.committed(id))
            .collect();
        fs::remove_all_present(&files)?;
        if !removed.is_empty() {
            self.index.flush()?;
        }
        Ok(removed.into_iter().map(|(_, e)| e).collect())
    }

    /// Records an entry for a file that was just moved into place.
    fn insert_committed(&self, id: &ImageId, entry: Entry) -> Result<(), sled::Error> {
        {
            let mut entries = self.write_entries();
            self.io.index_step(IndexStep::Insert)?;
            self.index.put(id, &entry)?;
            entries.insert(id.clone(), entry);
        }
        self.io.index_step(IndexStep::Flush)?;
        self.index.flush()
    }

    fn record_hit(&self, id: &ImageId, generation: u64) {
        let mut entries = self.write_entries();
        if let Some(entry) = entries.get_mut(id).filter(|e| e.generation == generation) {
            entry.hits += 1;
            entry.last_accessed = now();
            self.housekeeper.mark_dirty(id);
        }
    }

    fn flush_hits(&self) -> Result<(), StoreError> {
        let dirty = self.housekeeper.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        {
            let entries = self.read_entries();
            // Only entries still cached are written: a deleted image is not brought back.
            self.index.put_all(
                dirty
                    .iter()
                    .filter_map(|id| entries.get(id).map(|e| (id, e))),
            )?;
        }
        self.index.flush()?;
        Ok(())
    }
}

/// Now, in epoch seconds.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Locks a mutex, carrying on after a panic elsewhere: the guarded maps stay consistent
/// because every critical section is a single insert or remove.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
