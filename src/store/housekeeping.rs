//! The cache's background thread: writes hit counters to sled in batches, and prunes the cache
//! back under `image_cache_max_size` when a commit took it over.

use std::collections::HashSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{lock, Inner};
use crate::ImageId;

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Work for the background thread beyond the periodic hit flush.
enum Chore {
    Prune,
}

/// The images whose counters changed since the last flush, and the thread doing the chores.
pub(crate) struct Housekeeper {
    dirty: Mutex<HashSet<ImageId>>,
    chores: Mutex<Option<mpsc::Sender<Chore>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Housekeeper {
    pub(crate) fn start(cache: Weak<Inner>) -> Self {
        let (chores, received) = mpsc::channel::<Chore>();
        let thread = thread::Builder::new()
            .name("image-cache-housekeeping".into())
            .spawn(move || run(cache, received))
            .map_err(|err| tracing::error!(%err, "could not start the cache's background thread"))
            .ok();
        Housekeeper {
            dirty: Mutex::new(HashSet::new()),
            chores: Mutex::new(Some(chores)),
            thread: Mutex::new(thread),
        }
    }

    pub(crate) fn mark_dirty(&self, id: &ImageId) {
        let mut dirty = lock(&self.dirty);
        if !dirty.contains(id) {
            dirty.insert(id.clone());
        }
    }

    pub(crate) fn take_dirty(&self) -> HashSet<ImageId> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// Asks for a prune soon, off the caller's thread.
    pub(crate) fn request_prune(&self) {
        if let Some(chores) = lock(&self.chores).as_ref() {
            let _ = chores.send(Chore::Prune);
        }
    }
}

fn run(cache: Weak<Inner>, chores: mpsc::Receiver<Chore>) {
    loop {
        let prune = match chores.recv_timeout(FLUSH_EVERY) {
            Ok(Chore::Prune) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(cache) = cache.upgrade() else { return };
        if let Err(err) = cache.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index");
        }
        if prune {
            // Several commits may have asked; one prune answers them all.
            while let Ok(Chore::Prune) = chores.try_recv() {}
            match cache.prune() {
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
}

impl Housekeeper {
    /// Ends the thread and waits for it (unless called on it).
    pub(crate) fn stop(&self) {
        lock(&self.chores).take();
        let thread = lock(&self.thread).take();
        // The last handle may be dropped by the thread itself; it must not join itself.
        if let Some(thread) = thread.filter(|t| t.thread().id() != thread::current().id()) {
            let _ = thread.join();
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index on close");
        }
    }
}
