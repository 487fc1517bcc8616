//! The cache's background thread: writes hit counters to the index about once a second, applies
//! a fleet's evictions, and prunes the cache back under `image_cache_max_size` when a commit took it over.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::sync::lock;

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What the background thread does to the cache it keeps.
pub(crate) trait Chores: Send + Sync + 'static {
    /// Writes the hit counters gathered in memory.
    fn flush_hits(&self);
    /// Evicts the images other nodes of a fleet announced deleted.
    fn apply_fleet_news(&self);
    /// Prunes the cache back under its limit.
    fn prune(&self);
}

/// Work for the background thread beyond the periodic hit flush.
enum Chore {
    Prune,
}

/// The background thread of one cache.
#[derive(Debug)]
pub(crate) struct Housekeeper {
    chores: Mutex<Option<mpsc::Sender<Chore>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Housekeeper {
    /// Starts the thread; it stops when `cache` is gone or [`stop`](Self::stop) is called.
    pub(crate) fn start<C: Chores>(cache: Weak<C>) -> Self {
        let (chores, received) = mpsc::channel::<Chore>();
        let thread = thread::Builder::new()
            .name("image-cache-housekeeping".into())
            .spawn(move || run(cache, received))
            .map_err(|err| tracing::error!(%err, "could not start the cache's background thread"))
            .ok();
        Housekeeper {
            chores: Mutex::new(Some(chores)),
            thread: Mutex::new(thread),
        }
    }

    /// Asks for a prune soon, off the caller's thread.
    pub(crate) fn request_prune(&self) {
        if let Some(chores) = lock(&self.chores).as_ref() {
            let _ = chores.send(Chore::Prune);
        }
    }

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

fn run<C: Chores>(cache: Weak<C>, chores: mpsc::Receiver<Chore>) {
    loop {
        let prune = match chores.recv_timeout(FLUSH_EVERY) {
            Ok(Chore::Prune) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(cache) = cache.upgrade() else { return };
        cache.flush_hits();
        cache.apply_fleet_news();
        if prune {
            // Several commits may have asked; one prune answers them all.
            while let Ok(Chore::Prune) = chores.try_recv() {}
            cache.prune();
        }
    }
}
