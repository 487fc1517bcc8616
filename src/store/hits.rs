//! Hit counting: counted in memory on the hit path, written to sled in batches by a thread.

use std::collections::HashSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{lock, Inner};
use crate::ImageId;

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The set of images whose counters changed since the last flush, and the thread that
/// flushes them.
pub(crate) struct HitFlusher {
    dirty: Mutex<HashSet<ImageId>>,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HitFlusher {
    pub(crate) fn start(cache: Weak<Inner>) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("image-cache-hits".into())
            .spawn(move || run(cache, stopped))
            .map_err(|err| tracing::error!(%err, "could not start the hit flusher; hits are written on close"))
            .ok();
        HitFlusher {
            dirty: Mutex::new(HashSet::new()),
            stop: Mutex::new(Some(stop)),
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
}

fn run(cache: Weak<Inner>, stopped: mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(FLUSH_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(cache) = cache.upgrade() else { return };
        if let Err(err) = cache.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index");
        }
    }
}

impl Drop for HitFlusher {
    fn drop(&mut self) {
        lock(&self.stop).take();
        let thread = lock(&self.thread).take();
        // The last handle may be dropped by the flusher thread itself; it must not join itself.
        if let Some(thread) = thread.filter(|t| t.thread().id() != thread::current().id()) {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.flush_hits() {
            tracing::warn!(%err, "could not write hit counters to the cache index on close");
        }
    }
}
