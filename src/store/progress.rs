//! Fills in progress, as everyone else sees them: the registry of running fills, each fill's
//! progress and verdict ([`FillEnd`]), which readers following it wait on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use bytes::Bytes;

use super::recent::Recent;
use super::record::FillProgress;
use crate::sync::lock;
use crate::ImageId;

/// How a fill ended, for the readers that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FillEnd {
    /// Verified and committed.
    Committed,
    /// Verified, but not committed (the image was deleted meanwhile, or the commit failed): the
    /// bytes are right, the cache just does not keep them.
    Verified,
    /// The bytes are wrong or incomplete (verification failed, the source failed).
    Failed(String),
    /// The cache side gave up (a write failed): the file holds only part of the bytes.
    Abandoned(String),
}

/// A fill's progress, as readers following it see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) written: u64,
    /// The bytes passed verification: readers may have the last byte, before the commit's
    /// fsync and rename are done.
    pub(crate) verified: bool,
    pub(crate) end: Option<FillEnd>,
}

/// What every party to a fill can see of it.
#[derive(Debug)]
pub(crate) struct FillState {
    /// What readers following the fill see: bytes written so far, and how it ended.
    progress: watch::Sender<Progress>,
    cancelled: AtomicBool,
    /// The bytes the fill took so far: those in the file, and those gathered for its next
    /// block (what the listing of fills in progress shows).
    received: AtomicU64,
    /// Held across the commit's rename and index write, and by `cancel`, so a delete either
    /// stops the commit or runs after it — never between rename and index write.
    commit: Mutex<()>,
    expected_size: Option<u64>,
    /// Woken when a reader starts following the fill.
    joined: tokio::sync::Notify,
    /// The readers following the fill now.
    followers: AtomicUsize,
    /// The fill's latest chunks, kept while readers follow it.
    recent: Mutex<Recent>,
}

impl FillState {
    /// A fill's state; its window of recent chunks counts in the bytes all the windows of the
    /// cache keep (`chunks`' count).
    pub(crate) fn new(expected_size: Option<u64>, chunks: &super::chunks::ChunkPool) -> Self {
        FillState {
            progress: watch::Sender::new(Progress::default()),
            cancelled: AtomicBool::new(false),
            received: AtomicU64::new(0),
            commit: Mutex::new(()),
            expected_size,
            joined: tokio::sync::Notify::new(),
            followers: AtomicUsize::new(0),
            recent: Mutex::new(Recent::sharing(Arc::clone(&chunks.recent_held))),
        }
    }

    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(crate) fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    pub(crate) fn set_received(&self, received: u64) {
        self.received.store(received, Ordering::Relaxed);
    }

    /// Tells the readers that the file holds `written` bytes.
    pub(crate) fn set_written(&self, written: u64) {
        self.progress
            .send_modify(|progress| progress.written = written);
    }

    /// Tells the readers that the bytes passed verification.
    pub(crate) fn set_verified(&self) {
        self.progress
            .send_modify(|progress| progress.verified = true);
    }

    /// Counts a reader that starts following the fill, and tells whoever waits in
    /// [`FillOutcome::followed`].
    pub(crate) fn joined(&self) {
        self.followers.fetch_add(1, Ordering::AcqRel);
        self.joined.notify_waiters();
    }

    /// A follower is gone; with the last one, the kept chunks go.
    pub(crate) fn left(&self) {
        if self.followers.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&self.recent).clear();
        }
    }

    /// Keeps the writer's chunk (when it has one in a `Bytes`), the image's bytes from `at` on,
    /// while readers follow the fill.
    pub(crate) fn keep_recent(&self, at: u64, chunk: Option<&Bytes>) {
        if let Some(chunk) = chunk.filter(|_| self.followers.load(Ordering::Acquire) > 0) {
            lock(&self.recent).keep(at, chunk);
        }
    }

    /// The fill's bytes from `from` up to (not including) `until`, from its latest chunks,
    /// when they are still kept.
    pub(crate) fn recent(&self, from: u64, until: u64) -> Option<Bytes> {
        lock(&self.recent).slice(from, until)
    }

    /// Records how the fill ended; the first word stands.
    ///
    /// The kept chunks go too: followers still reading (one stalled for good among them) read
    /// the rest from the file, and an ended fill holds no memory for them.
    pub(crate) fn end(&self, end: FillEnd) {
        self.progress.send_if_modified(|progress| {
            let first = progress.end.is_none();
            if first {
                progress.end = Some(end);
            }
            first
        });
        lock(&self.recent).clear();
    }

    pub(crate) fn cancel(&self) {
        let _commit = lock(&self.commit);
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Holds off [`cancel`](Self::cancel) until the guard is dropped; then tells whether the
    /// fill was cancelled before.
    pub(crate) fn begin_commit(&self) -> (MutexGuard<'_, ()>, bool) {
        let guard = lock(&self.commit);
        (guard, self.cancelled.load(Ordering::SeqCst))
    }
}

/// The running fills, one per image, and how many there are (watched by
/// `ImageCache::idle` and `fill_settled`).
#[derive(Debug)]
pub(crate) struct Fills {
    running: Mutex<HashMap<ImageId, Arc<FillState>>>,
    count: watch::Sender<usize>,
}

impl Default for Fills {
    fn default() -> Self {
        Fills {
            running: Mutex::new(HashMap::new()),
            count: watch::Sender::new(0),
        }
    }
}

impl Fills {
    /// Registers a fill of `id`; `false` when one is running already.
    pub(crate) fn register(&self, id: &ImageId, state: &Arc<FillState>) -> bool {
        {
            let mut running = lock(&self.running);
            if running.contains_key(id) {
                return false;
            }
            running.insert(id.clone(), Arc::clone(state));
        }
        // Counted outside the lock: `fill_settled` reads the fills inside the watch's lock.
        self.count.send_modify(|count| *count += 1);
        true
    }

    /// Forgets the fill of `id`, if it is still `state`.
    pub(crate) fn unregister(&self, id: &ImageId, state: &Arc<FillState>) {
        let removed = {
            let mut running = lock(&self.running);
            let ours = running.get(id).is_some_and(|s| Arc::ptr_eq(s, state));
            ours && running.remove(id).is_some()
        };
        if removed {
            self.count.send_modify(|count| *count -= 1);
        }
    }

    pub(crate) fn get(&self, id: &ImageId) -> Option<Arc<FillState>> {
        lock(&self.running).get(id).cloned()
    }

    pub(crate) fn contains(&self, id: &ImageId) -> bool {
        lock(&self.running).contains_key(id)
    }

    /// The ids being filled now.
    pub(crate) fn ids(&self) -> Vec<ImageId> {
        lock(&self.running).keys().cloned().collect()
    }

    /// Runs `work` while no fill can start or end.
    pub(crate) fn while_locked<T>(&self, work: impl FnOnce(&dyn Fn(&ImageId) -> bool) -> T) -> T {
        let running = lock(&self.running);
        work(&|id| running.contains_key(id))
    }

    /// Cancels the fill of `id`, if one runs: it will not commit.
    pub(crate) fn cancel(&self, id: &ImageId) {
        if let Some(fill) = self.get(id) {
            fill.cancel();
        }
    }

    pub(crate) fn progress(&self) -> Vec<FillProgress> {
        lock(&self.running)
            .iter()
            .map(|(id, state)| FillProgress {
                image_id: id.clone(),
                bytes_written: state.received.load(Ordering::Relaxed),
                expected_size: state.expected_size,
            })
            .collect()
    }

    /// Resolves once no fill is running.
    pub(crate) async fn idle(&self) {
        let mut count = self.count.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = count.wait_for(|count| *count == 0).await;
    }

    /// Resolves once no fill of `id` is running.
    pub(crate) async fn settled(&self, id: &ImageId) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|_| !self.contains(id)).await;
    }
}

/// Tells how a fill ended; see [`FillWriter::outcome`](super::FillWriter::outcome).
#[derive(Debug, Clone)]
pub struct FillOutcome {
    progress: watch::Receiver<Progress>,
    state: Arc<FillState>,
}

impl FillOutcome {
    pub(crate) fn new(state: &Arc<FillState>) -> Self {
        FillOutcome {
            progress: state.progress(),
            state: Arc::clone(state),
        }
    }

    /// Whether any reader follows the fill (besides this handle).
    pub fn is_followed(&self) -> bool {
        self.state.progress.receiver_count() > 1
    }

    /// Resolves once a reader follows the fill (besides this handle).
    pub async fn followed(&self) {
        loop {
            let joined = self.state.joined.notified();
            if self.is_followed() {
                return;
            }
            joined.await;
        }
    }

    /// Waits for the verdict on the bytes: [`FillEnd::Verified`] as soon as they passed
    /// verification (the commit's fsync, rename and index write may still be running, and may
    /// fail), [`FillEnd::Committed`] if the commit was done by the time this looks, or how the
    /// fill ended when it ended unverified.
    pub async fn verdict(mut self) -> FillEnd {
        match self
            .progress
            .wait_for(|p| p.verified || p.end.is_some())
            .await
        {
            Ok(progress) => match &progress.end {
                Some(FillEnd::Committed) => FillEnd::Committed,
                // Verified bytes stay verified, whatever became of the commit.
                _ if progress.verified => FillEnd::Verified,
                end => end.clone().expect("waited for it"),
            },
            Err(_) => FillEnd::Failed("the fill ended without an outcome".into()),
        }
    }

    /// Waits for the fill to end (commit, or any kind of rollback).
    pub async fn ended(mut self) -> FillEnd {
        match self.progress.wait_for(|p| p.end.is_some()).await {
            Ok(progress) => progress.end.clone().expect("waited for it"),
            // The fill's state is gone without a word: it cannot have committed.
            Err(_) => FillEnd::Failed("the fill ended without an outcome".into()),
        }
    }
}
