//! Locking that survives a panic elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, carrying on after a panic elsewhere: the maps it guards stay consistent
/// because every critical section is a single insert or remove.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for a reader of a `RwLock`.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for the writer of a `RwLock`.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Counts the services a layer (and its clones) built that are still alive: more than one at
/// once is axum's `Router::layer` wrapping each route alone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Census(Arc<AtomicUsize>);

/// One service counted by a [`Census`], until it is dropped.
#[derive(Debug)]
pub(crate) struct Member(Arc<AtomicUsize>);

impl Census {
    /// Counts one more service; returns its membership and how many are alive now.
    pub(crate) fn enlist(&self) -> (Member, usize) {
        let alive = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        (Member(Arc::clone(&self.0)), alive)
    }
}

impl Member {
    /// How many services of the census are alive now, this one included.
    pub(crate) fn alive(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
