//! The prefetch queue, kept by the index driver in the order images will be fetched (FIFO).

use super::cache::{ImageCache, Inner};
use super::error::StoreError;
use crate::sync::lock;
use crate::ImageId;

impl ImageCache {
    /// Queues `id` for the prefetcher. Returns `false`, queueing nothing, when it is cached,
    /// being filled, or queued already (as Glance's `queue_image` does).
    pub fn queue_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        if self.is_cached(id) || self.is_filling(id) || self.is_reserved(id) {
            return Ok(false);
        }
        let added = self.inner.catalog.driver().enqueue(id)?;
        if added {
            self.inner.queued.notify_one();
        }
        Ok(added)
    }

    /// Resolves when an image is queued (or was queued since the last call returned).
    pub(crate) async fn image_queued(&self) {
        self.inner.queued.notified().await;
    }

    /// The queued ids, in the order they will be fetched.
    pub fn queued_images(&self) -> Result<Vec<ImageId>, StoreError> {
        Ok(self.inner.catalog.driver().queued()?)
    }

    /// Whether `id` is queued.
    pub fn is_queued(&self, id: &ImageId) -> Result<bool, StoreError> {
        Ok(self.queued_images()?.contains(id))
    }

    /// Removes `id` from the queue; returns whether it was queued.
    pub fn delete_queued_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        Ok(self.inner.catalog.driver().dequeue(id)?)
    }

    /// Empties the queue; returns how many ids it held.
    pub fn delete_all_queued_images(&self) -> Result<usize, StoreError> {
        Ok(self.inner.catalog.driver().clear_queue()?)
    }

    /// Forgets `id` entirely: removes it from the cache and the queue and cancels a fill of it
    /// (what deleting the image calls for). Returns whether it was cached or queued.
    pub fn evict(&self, id: &ImageId) -> Result<bool, StoreError> {
        self.void_access_decisions(id);
        let cached = self.delete_cached_image(id)?;
        let queued = self.delete_queued_image(id)?;
        Ok(cached || queued)
    }

    /// The image was deleted from the image service: evicts it here (as
    /// [`evict`](Self::evict)) and, on a `centralized_db` node, tells every other node of the
    /// fleet to evict it too. Returns whether it was cached or queued here.
    pub fn image_deleted(&self, id: &ImageId) -> Result<bool, StoreError> {
        let here = self.evict(id)?;
        if let Some(fleet) = &self.inner.fleet {
            fleet.announce_deleted(id);
        }
        Ok(here)
    }

    /// Who may download `id` may have changed (it was deleted, deactivated, re-uploaded, its
    /// members changed): access decisions remembered for it before now admit nobody any more.
    /// [`evict`](Self::evict) calls it; the layer calls it for the API's changes it sees.
    pub(crate) fn void_access_decisions(&self, id: &ImageId) {
        self.inner.void_decisions(id);
    }

    /// Whether the access decisions for `id` made at `decided` were voided since.
    pub(crate) fn voided_since(&self, id: &ImageId, decided: std::time::Instant) -> bool {
        if *lock(&self.inner.voided_all) >= decided {
            return true;
        }
        lock(&self.inner.voided)
            .get(id)
            .is_some_and(|at| *at >= decided)
    }

    /// A caller's access check answered 404 for the cached `id`: the image may be gone, or only
    /// hidden from that caller. The management layer checks with its own identity and evicts
    /// it when the image API does not know it either ([`take_suspects`](Self::take_suspects)).
    pub(crate) fn suspect_deleted(&self, id: &ImageId) {
        let mut suspects = lock(&self.inner.suspects);
        if !suspects.contains(id) {
            suspects.push(id.clone());
        }
        drop(suspects);
        self.inner.suspected.notify_one();
    }

    /// Resolves when an image was reported by [`suspect_deleted`](Self::suspect_deleted).
    pub(crate) async fn suspects_reported(&self) {
        self.inner.suspected.notified().await;
    }

    /// The images reported since the last call that are still cached.
    pub(crate) fn take_suspects(&self) -> Vec<ImageId> {
        let taken = std::mem::take(&mut *lock(&self.inner.suspects));
        taken.into_iter().filter(|id| self.is_cached(id)).collect()
    }
}

impl Inner {
    /// See [`ImageCache::void_access_decisions`]; fleet evictions call it too.
    pub(crate) fn void_decisions(&self, id: &ImageId) {
        /// Decisions live at most a day or two: older voids need not be kept.
        const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);
        /// Bounds the map between two forgettings.
        const MAX_VOIDED: usize = 100_000;
        let now = std::time::Instant::now();
        let mut voided = lock(&self.voided);
        if voided.len() >= MAX_VOIDED {
            voided.retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
            if voided.len() >= MAX_VOIDED {
                // More voids than a day's worth: forget them all, and every decision with them.
                voided.clear();
                *lock(&self.voided_all) = now;
            }
        }
        voided.insert(id.clone(), now);
    }
}
