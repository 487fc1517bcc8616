//! An [`IndexDriver`] in memory that fails on demand, for tests of the seam: what the store does
//! when its driver fails or stalls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::driver::{IndexDriver, IndexError, IndexRecord};
use crate::sync::lock;
use crate::ImageId;

/// A driver call that can be made to fail or stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    Put,
    PutAll,
    Flush,
    Probe,
}

/// Cheap to clone: the clones share one index, so a test keeps one to look inside.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryDriver {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    records: Mutex<HashMap<ImageId, IndexRecord>>,
    numbers: Mutex<HashMap<String, u64>>,
    queue: Mutex<Vec<ImageId>>,
    generation: AtomicU64,
    /// Calls that fail, each entry once.
    failing: Mutex<Vec<Call>>,
    /// While true, `put` and `remove_all` wait (a slow database).
    stalled: Mutex<bool>,
    resumed: Condvar,
    /// Puts waiting in a stall now.
    waiting: AtomicU64,
}

impl MemoryDriver {
    /// Makes the next `call` fail (once).
    pub(crate) fn fail_once(&self, call: Call) {
        lock(&self.shared.failing).push(call);
    }

    /// Makes `put` and `remove_all` wait until [`resume`](Self::resume).
    pub(crate) fn stall_writes(&self) {
        *lock(&self.shared.stalled) = true;
    }

    /// Whether a write is waiting in a stall now.
    pub(crate) fn is_stalling(&self) -> bool {
        self.shared.waiting.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn resume(&self) {
        *lock(&self.shared.stalled) = false;
        self.shared.resumed.notify_all();
    }

    /// The record the driver holds for `id`.
    pub(crate) fn record(&self, id: &ImageId) -> Option<IndexRecord> {
        lock(&self.shared.records).get(id).copied()
    }

    fn wait_while_stalled(&self) {
        let mut stalled = lock(&self.shared.stalled);
        if !*stalled {
            return;
        }
        self.shared.waiting.fetch_add(1, Ordering::SeqCst);
        while *stalled {
            stalled = self
                .shared
                .resumed
                .wait(stalled)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn check(&self, call: Call) -> Result<(), IndexError> {
        let mut failing = lock(&self.shared.failing);
        match failing.iter().position(|c| *c == call) {
            Some(at) => {
                failing.remove(at);
                Err(IndexError::failed(format!(
                    "{call:?} failed (injected by the test)"
                )))
            }
            None => Ok(()),
        }
    }
}

impl IndexDriver for MemoryDriver {
    fn load(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        self.records()
    }

    fn records(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        let records = lock(&self.shared.records);
        Ok(records.iter().map(|(id, r)| (id.clone(), *r)).collect())
    }

    fn number(&self, key: &str) -> Result<Option<u64>, IndexError> {
        Ok(lock(&self.shared.numbers).get(key).copied())
    }

    fn set_number(&self, key: &str, value: u64) -> Result<(), IndexError> {
        lock(&self.shared.numbers).insert(key.to_owned(), value);
        Ok(())
    }

    fn put(&self, id: &ImageId, record: &IndexRecord) -> Result<(), IndexError> {
        self.wait_while_stalled();
        self.check(Call::Put)?;
        lock(&self.shared.records).insert(id.clone(), *record);
        Ok(())
    }

    fn put_all(&self, records: &[(ImageId, IndexRecord)]) -> Result<(), IndexError> {
        self.check(Call::PutAll)?;
        lock(&self.shared.records).extend(records.iter().map(|(id, r)| (id.clone(), *r)));
        Ok(())
    }

    fn remove_all(&self, ids: &[ImageId]) -> Result<(), IndexError> {
        self.wait_while_stalled();
        let mut records = lock(&self.shared.records);
        for id in ids {
            records.remove(id);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.check(Call::Flush)
    }

    fn probe(&self) -> Result<(), IndexError> {
        self.check(Call::Probe)
    }

    fn next_generation(&self) -> Result<u64, IndexError> {
        Ok(self.shared.generation.fetch_add(1, Ordering::SeqCst))
    }

    fn queued(&self) -> Result<Vec<ImageId>, IndexError> {
        Ok(lock(&self.shared.queue).clone())
    }

    fn enqueue(&self, id: &ImageId) -> Result<bool, IndexError> {
        let mut queue = lock(&self.shared.queue);
        let added = !queue.contains(id);
        if added {
            queue.push(id.clone());
        }
        Ok(added)
    }

    fn dequeue(&self, id: &ImageId) -> Result<bool, IndexError> {
        let mut queue = lock(&self.shared.queue);
        let before = queue.len();
        queue.retain(|queued| queued != id);
        Ok(queue.len() != before)
    }

    fn clear_queue(&self) -> Result<usize, IndexError> {
        Ok(std::mem::take(&mut *lock(&self.shared.queue)).len())
    }
}
