//! [`ImageCache`]: the handle, what it holds, opening it, and the verbs on committed images.

use std::sync::{Arc, Weak};

use super::catalog::Catalog;
use super::chunks::ChunkPool;
use super::clock::now;
#[cfg(test)]
use super::driver::IndexDriver;
use super::driver::IndexRecord;
use super::error::{BlockingError, StoreError};
use super::fs::{FillIo, StdFillIo};
use super::housekeeping::{Chores, Housekeeper};
use super::layout::{remove_all_present, Layout};
use super::open_index::{open_index, FleetLink, OpenedIndex};
use super::progress::Fills;
use super::reconcile::reconcile;
use super::record::{CachedImage, FillProgress};
use crate::config::db_name_problem;
use crate::metrics::CacheMetrics;
use crate::{CacheConfig, ImageId};

/// A handle on the cache. Cheap to clone; all clones share one cache. When the last clone is
/// dropped, the cache's background thread is stopped before the drop returns, so the directory
/// (and the index's lock on it) is free to open again at once.
#[derive(Clone)]
pub struct ImageCache {
    pub(crate) inner: Arc<Inner>,
    _last_handle: Arc<LastHandle>,
}

/// Shared by every `ImageCache` handle (not by the readers, writers and threads inside).
struct LastHandle {
    cache: Weak<Inner>,
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

/// The cache itself, shared by the handles, readers, writers and the background thread.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: CacheConfig,
    pub(crate) layout: Layout,
    pub(crate) io: Arc<dyn FillIo>,
    pub(crate) catalog: Catalog,
    pub(crate) fills: Fills,
    /// Woken when an image is queued, so a prefetcher fetches it at once.
    pub(crate) queued: tokio::sync::Notify,
    /// Cached images a caller's access check got a 404 for, for the management layer to check
    /// with its own identity (a 404 to one caller may only mean the image is private).
    pub(crate) suspects: std::sync::Mutex<Vec<ImageId>>,
    pub(crate) suspected: tokio::sync::Notify,
    /// When each image's remembered access decisions were last voided (deleted, deactivated,
    /// re-uploaded, its members changed): a decision older than that admits nobody.
    pub(crate) voided: std::sync::Mutex<std::collections::HashMap<ImageId, std::time::Instant>>,
    /// Decisions made before this instant admit nobody (the open, or a flood of voids).
    pub(crate) voided_all: std::sync::Mutex<std::time::Instant>,
    pub(crate) metrics: CacheMetrics,
    pub(crate) housekeeper: Housekeeper,
    /// The buffers hits and followers read into.
    pub(crate) chunks: Arc<ChunkPool>,
    /// The bytes of small images, after their first hit.
    pub(crate) small: super::small_images::SmallImages,
    /// The fleet of a `centralized_db` node.
    pub(crate) fleet: Option<FleetLink>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("image_cache_dir", &self.inner.layout.base)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn FillIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FillIo")
    }
}

impl ImageCache {
    /// Opens (creating when needed) the cache described by `config`.
    ///
    /// Reconciles the index with the files: records without a file are dropped, committed files
    /// without a record are adopted, a committed file whose size disagrees with its record is
    /// removed. Fills left in `incomplete/` by a process that stopped are removed at once (and
    /// logged): nothing will finish them, and the cleaner would wait `image_cache_stall_time`. An index the driver cannot read is moved into `invalid/` and rebuilt from the
    /// files. Fails only when the directory cannot be created or another process holds the
    /// index ([`StoreError::is_locked`]).
    pub fn open(config: CacheConfig) -> Result<Self, StoreError> {
        Self::open_io(config, Arc::new(StdFillIo))
    }

    /// Like [`open`](Self::open), with the file operations of fills supplied by `io`: the fault
    /// seam of the crate's tests and benches (feature `fuzzing`; not covered by semver).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn open_with_io(config: CacheConfig, io: Arc<dyn FillIo>) -> Result<Self, StoreError> {
        Self::open_io(config, io)
    }

    fn open_io(config: CacheConfig, io: Arc<dyn FillIo>) -> Result<Self, StoreError> {
        if let Some(problem) = db_name_problem(&config.image_cache_sqlite_db) {
            return Err(StoreError::InvalidConfig(format!(
                "image_cache_sqlite_db {problem}, not {:?}",
                config.image_cache_sqlite_db
            )));
        }
        let layout = Layout::new(&config.image_cache_dir);
        layout.create_dirs()?;
        let db_path = super::glance_import::index_path(&config);
        layout.prepare_private_index(&db_path)?;
        let index = open_index(&config, &layout)?;
        layout.make_private(&db_path);
        Self::assemble(config, layout, io, index)
    }

    /// Opens the cache over a driver of the caller's (tests use one that fails on demand).
    #[cfg(test)]
    pub(crate) fn open_with_driver(
        config: CacheConfig,
        io: Arc<dyn FillIo>,
        driver: Box<dyn IndexDriver>,
    ) -> Result<Self, StoreError> {
        let layout = Layout::new(&config.image_cache_dir);
        layout.create_dirs()?;
        Self::assemble(
            config,
            layout,
            io,
            OpenedIndex {
                driver,
                fleet: None,
            },
        )
    }

    fn assemble(
        config: CacheConfig,
        layout: Layout,
        io: Arc<dyn FillIo>,
        index: OpenedIndex,
    ) -> Result<Self, StoreError> {
        let OpenedIndex { driver, fleet } = index;
        let loaded = driver.load()?;
        let records = reconcile(&layout, &config, &*driver, loaded)?;
        // The index's lock is ours: whatever is in incomplete/ was left by a process that
        // stopped mid-fill, and nothing will finish it.
        let (reclaimed, bytes) = layout.reclaim_incomplete()?;
        if reclaimed > 0 {
            tracing::warn!(
                fills = reclaimed,
                bytes,
                dir = %layout.incomplete.display(),
                "removed unfinished fills left by a process that stopped"
            );
        }
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            config,
            layout,
            io,
            catalog: Catalog::new(driver, records),
            fills: Fills::default(),
            queued: tokio::sync::Notify::new(),
            suspects: std::sync::Mutex::default(),
            suspected: tokio::sync::Notify::new(),
            voided: std::sync::Mutex::default(),
            voided_all: std::sync::Mutex::new(std::time::Instant::now()),
            metrics: CacheMetrics::default(),
            chunks: Arc::default(),
            small: Default::default(),
            fleet,
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

    /// Whether `id` is a name the cache uses for itself in `image_cache_dir`: the index
    /// (`image_cache_sqlite_db`), `incomplete` or `invalid`. Such an image is never cached, nor
    /// queued; the layer passes its downloads through and the management routes refuse it.
    pub fn is_reserved(&self, id: &ImageId) -> bool {
        self.inner.config.is_reserved_name(id.as_str())
    }

    /// Whether a committed copy of `id` is in the cache.
    pub fn is_cached(&self, id: &ImageId) -> bool {
        self.inner.catalog.contains(id)
    }

    /// Whether a fill of `id` is running.
    pub fn is_filling(&self, id: &ImageId) -> bool {
        self.inner.fills.contains(id)
    }

    /// The record of one cached image.
    pub fn cached_image(&self, id: &ImageId) -> Option<CachedImage> {
        let record = self.inner.catalog.get(id)?;
        Some(CachedImage::new(id, &record))
    }

    /// Every cached image, least recently accessed first.
    pub fn cached_images(&self) -> Vec<CachedImage> {
        let mut records: Vec<CachedImage> = self
            .inner
            .catalog
            .all()
            .iter()
            .map(|(id, r)| CachedImage::new(id, r))
            .collect();
        records.sort_by(|a, b| {
            a.last_accessed
                .total_cmp(&b.last_accessed)
                .then_with(|| a.image_id.cmp(&b.image_id))
        });
        records
    }

    /// The fills now running, with how far each has got.
    pub fn fills_in_progress(&self) -> Vec<FillProgress> {
        self.inner.fills.progress()
    }

    /// The total size of the committed images, in bytes.
    pub fn size(&self) -> u64 {
        self.inner.catalog.total_size()
    }

    /// Removes `id` from the cache. A fill of `id` that is still running is cancelled: it will
    /// not commit. Returns whether a committed image was removed.
    pub fn delete_cached_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        self.inner.fills.cancel(id);
        Ok(!self
            .inner
            .remove_committed([(id.clone(), None)])?
            .is_empty())
    }

    /// Removes every committed image and cancels every running fill. Returns how many images
    /// were removed.
    pub fn delete_all_cached_images(&self) -> Result<usize, StoreError> {
        for id in self.inner.fills.ids() {
            self.inner.fills.cancel(&id);
        }
        let ids = self.inner.catalog.ids();
        Ok(self
            .inner
            .remove_committed(ids.into_iter().map(|id| (id, None)))?
            .len())
    }

    /// Runs a store operation on tokio's blocking pool (the store's calls touch files and the
    /// index).
    pub async fn blocking<T, E>(
        &self,
        work: impl FnOnce(&ImageCache) -> Result<T, E> + Send + 'static,
    ) -> Result<T, BlockingError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let cache = self.clone();
        match tokio::task::spawn_blocking(move || work(&cache)).await {
            Ok(done) => done.map_err(BlockingError::Failed),
            Err(join) => Err(BlockingError::Interrupted {
                reason: join.to_string(),
            }),
        }
    }

    /// Resolves once no fill is running (each one committed or rolled back).
    pub async fn idle(&self) {
        self.inner.fills.idle().await;
    }

    /// Resolves once no fill of `id` is running.
    pub(crate) async fn fill_settled(&self, id: &ImageId) {
        self.inner.fills.settled(id).await;
    }

    /// The cache's counters, for the layers to count into.
    pub(crate) fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }
}

impl Inner {
    /// Removes the records and files of `victims` (each only if its generation is still the
    /// given one, when one is given); returns the records removed.
    pub(crate) fn remove_committed(
        &self,
        victims: impl IntoIterator<Item = (ImageId, Option<u64>)>,
    ) -> Result<Vec<IndexRecord>, StoreError> {
        let removed = self.catalog.remove(victims)?;
        self.small.forget(removed.iter().map(|(id, _)| id));
        let files: Vec<_> = removed
            .iter()
            .map(|(id, _)| self.layout.committed(id))
            .collect();
        remove_all_present(&files)?;
        if !removed.is_empty() {
            self.catalog.flush()?;
        }
        Ok(removed.into_iter().map(|(_, r)| r).collect())
    }

    /// Removes the least recently accessed images until the cache fits
    /// `image_cache_max_size`; returns how many images and bytes went.
    pub(crate) fn prune(&self) -> Result<(usize, u64), StoreError> {
        let victims = self.catalog.prune_victims(self.config.image_cache_max_size);
        if victims.is_empty() {
            return Ok((0, 0));
        }
        // Only the copies chosen above go: an image deleted and committed again meanwhile stays.
        let removed = self.remove_committed(victims)?;
        let (images, bytes) = (removed.len(), removed.iter().map(|r| r.size).sum());
        self.metrics.pruned(images, bytes);
        Ok((images, bytes))
    }

    /// Counts a complete delivery of the commit `generation` of `id`.
    pub(crate) fn record_hit(&self, id: &ImageId, generation: u64) {
        self.catalog.record_hit(id, generation, now());
    }
}

impl Chores for Inner {
    fn flush_hits(&self) {
        if let Err(err) = self.catalog.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index; will retry");
        }
    }

    fn apply_fleet_news(&self) {
        let Some(fleet) = &self.fleet else { return };
        for id in fleet.take_evictions() {
            // Deleted through another node: nobody's remembered access to it stands.
            self.void_decisions(&id);
            self.fills.cancel(&id);
            let evicted = self
                .remove_committed([(id.clone(), None)])
                .and_then(|removed| Ok((removed, self.catalog.driver().dequeue(&id)?)));
            match evicted {
                Ok((removed, _)) if !removed.is_empty() => tracing::info!(
                    image = %id,
                    "evicted an image deleted through another node of the fleet"
                ),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(image = %id, %err, "could not evict an image deleted through another node")
                }
            }
        }
    }

    fn prune(&self) {
        match Inner::prune(self) {
            Ok((0, _)) => {}
            Ok((files, bytes)) => tracing::info!(
                files,
                bytes,
                "pruned the cache back under image_cache_max_size"
            ),
            Err(err) => tracing::warn!(%err, "could not prune the cache"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.catalog.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index on close");
        }
    }
}
