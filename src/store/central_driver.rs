//! The `centralized_db` [`IndexDriver`]: a decorator over the node's own index (any driver;
//! sled today), mirrored into the central database by a [`Replicator`].
//!
//! Every call is answered by the local index, so the cache behaves exactly as with `sled`
//! whatever the database does; each change of a record is then handed to the replicator, which
//! writes it behind.

use std::sync::Arc;

use super::driver::{IndexDriver, IndexError, IndexRecord};
use super::replicator::Replicator;
use crate::ImageId;

#[derive(Debug)]
pub(crate) struct CentralIndex {
    local: Arc<dyn IndexDriver>,
    replicator: Arc<Replicator>,
}

impl CentralIndex {
    pub(crate) fn new(local: Arc<dyn IndexDriver>, replicator: Arc<Replicator>) -> Self {
        CentralIndex { local, replicator }
    }
}

impl IndexDriver for CentralIndex {
    fn load(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        self.local.load()
    }

    fn records(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        self.local.records()
    }

    fn number(&self, key: &str) -> Result<Option<u64>, IndexError> {
        self.local.number(key)
    }

    fn set_number(&self, key: &str, value: u64) -> Result<(), IndexError> {
        self.local.set_number(key, value)
    }

    fn put(&self, id: &ImageId, record: &IndexRecord) -> Result<(), IndexError> {
        self.local.put(id, record)?;
        self.replicator.changed(id, Some(*record));
        Ok(())
    }

    fn put_all(&self, records: &[(ImageId, IndexRecord)]) -> Result<(), IndexError> {
        self.local.put_all(records)?;
        for (id, record) in records {
            self.replicator.changed(id, Some(*record));
        }
        Ok(())
    }

    fn remove_all(&self, ids: &[ImageId]) -> Result<(), IndexError> {
        self.local.remove_all(ids)?;
        for id in ids {
            self.replicator.changed(id, None);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.local.flush()?;
        // A commit, a delete or a prune reaches the database at once, not at the next round.
        self.replicator.nudge();
        Ok(())
    }

    fn probe(&self) -> Result<(), IndexError> {
        self.local.probe()
    }

    fn next_generation(&self) -> Result<u64, IndexError> {
        self.local.next_generation()
    }

    fn queued(&self) -> Result<Vec<ImageId>, IndexError> {
        self.local.queued()
    }

    fn enqueue(&self, id: &ImageId) -> Result<bool, IndexError> {
        self.local.enqueue(id)
    }

    fn dequeue(&self, id: &ImageId) -> Result<bool, IndexError> {
        self.local.dequeue(id)
    }

    fn clear_queue(&self) -> Result<usize, IndexError> {
        self.local.clear_queue()
    }
}
