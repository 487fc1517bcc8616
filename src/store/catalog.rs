//! The catalog: the records of the committed images in memory, mirroring the index driver, so
//! the hit path never waits on the driver.
//!
//! Lookups and hit counting take only the in-memory map, for a moment. Writes to the driver are
//! made in the order the map changed (one writer at a time, `writes`), but outside the map's
//! lock: a slow or failing driver holds back other writes, never a hit. What the hit path itself
//! changes (hit counters, a copy found damaged and forgotten) is written behind, in batches
//! ([`Catalog::flush_hits`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::driver::{IndexDriver, IndexError, IndexRecord};
use super::fs::IndexStep;
use crate::sync::lock;
use crate::ImageId;

#[derive(Debug)]
pub(crate) struct Catalog {
    driver: Box<dyn IndexDriver>,
    records: RwLock<HashMap<ImageId, IndexRecord>>,
    /// Held across each write to the driver, so they land in the order the map changed.
    writes: Mutex<()>,
    /// What the hit path changed since the last flush, for the driver.
    behind: Mutex<WriteBehind>,
}

/// Changes made in memory on the hit path, written to the driver by the next flush.
#[derive(Debug, Default)]
struct WriteBehind {
    /// Images whose counters changed.
    hits: HashSet<ImageId>,
    /// Images forgotten (their records are removed unless the image was committed again).
    forgotten: HashSet<ImageId>,
}

impl Catalog {
    pub(crate) fn new(
        driver: Box<dyn IndexDriver>,
        records: HashMap<ImageId, IndexRecord>,
    ) -> Self {
        Catalog {
            driver,
            records: RwLock::new(records),
            writes: Mutex::new(()),
            behind: Mutex::new(WriteBehind::default()),
        }
    }

    /// The driver, for what the catalog does not mirror (the queue).
    pub(crate) fn driver(&self) -> &dyn IndexDriver {
        &*self.driver
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<ImageId, IndexRecord>> {
        crate::sync::read(&self.records)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ImageId, IndexRecord>> {
        crate::sync::write(&self.records)
    }

    pub(crate) fn get(&self, id: &ImageId) -> Option<IndexRecord> {
        self.read().get(id).copied()
    }

    pub(crate) fn contains(&self, id: &ImageId) -> bool {
        self.read().contains_key(id)
    }

    pub(crate) fn all(&self) -> Vec<(ImageId, IndexRecord)> {
        self.read().iter().map(|(id, r)| (id.clone(), *r)).collect()
    }

    pub(crate) fn ids(&self) -> Vec<ImageId> {
        self.read().keys().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    pub(crate) fn total_size(&self) -> u64 {
        self.read().values().map(|r| r.size).sum()
    }

    /// Records a file just moved into place: durably in the driver first, then in the map (so a
    /// hit never finds an image the driver does not know). `step` runs before each driver step.
    pub(crate) fn insert(
        &self,
        id: &ImageId,
        record: IndexRecord,
        step: impl Fn(IndexStep) -> std::io::Result<()>,
    ) -> Result<(), IndexError> {
        let _writes = lock(&self.writes);
        step(IndexStep::Insert).map_err(IndexError::failed)?;
        self.driver.put(id, &record)?;
        self.write().insert(id.clone(), record);
        step(IndexStep::Flush).map_err(IndexError::failed)?;
        self.driver.flush()
    }

    /// Forgets `victims` (each only if its generation is still the given one, when one is
    /// given), in the map and then in the driver; returns what was removed. The caller removes
    /// the files, then calls [`flush`](Self::flush).
    pub(crate) fn remove(
        &self,
        victims: impl IntoIterator<Item = (ImageId, Option<u64>)>,
    ) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        let _writes = lock(&self.writes);
        let removed: Vec<(ImageId, IndexRecord)> = {
            let mut records = self.write();
            victims
                .into_iter()
                .filter_map(|(id, generation)| {
                    let current = records
                        .get(&id)
                        .is_some_and(|r| generation.is_none_or(|g| g == r.generation));
                    if !current {
                        return None;
                    }
                    records.remove(&id).map(|record| (id, record))
                })
                .collect()
        };
        if !removed.is_empty() {
            let ids: Vec<ImageId> = removed.iter().map(|(id, _)| id.clone()).collect();
            self.driver.remove_all(&ids)?;
        }
        Ok(removed)
    }

    /// Makes the driver's writes so far durable.
    pub(crate) fn flush(&self) -> Result<(), IndexError> {
        let _writes = lock(&self.writes);
        self.driver.flush()
    }

    /// Counts a complete delivery of the commit `generation` of `id` (in memory; written by
    /// the next [`flush_hits`](Self::flush_hits)).
    pub(crate) fn record_hit(&self, id: &ImageId, generation: u64, at: f64) {
        let counted = {
            let mut records = self.write();
            match records.get_mut(id).filter(|r| r.generation == generation) {
                Some(record) => {
                    record.hits += 1;
                    record.last_accessed = at;
                    true
                }
                None => false,
            }
        };
        if counted {
            let mut behind = lock(&self.behind);
            if !behind.hits.contains(id) {
                behind.hits.insert(id.clone());
            }
        }
    }

    /// Forgets the commit `generation` of `id` at once, in memory only (the hit path found its
    /// file damaged); the driver learns it at the next flush. Returns whether it was forgotten.
    pub(crate) fn forget(&self, id: &ImageId, generation: u64) -> bool {
        let forgotten = {
            let mut records = self.write();
            let current = records.get(id).is_some_and(|r| r.generation == generation);
            current && records.remove(id).is_some()
        };
        if forgotten {
            let mut behind = lock(&self.behind);
            behind.hits.remove(id);
            behind.forgotten.insert(id.clone());
        }
        forgotten
    }

    /// Writes what the hit path changed since the last flush (counters, forgotten images) to
    /// the driver. On failure it is kept for the next flush.
    pub(crate) fn flush_hits(&self) -> Result<(), IndexError> {
        let _writes = lock(&self.writes);
        let behind = std::mem::take(&mut *lock(&self.behind));
        if behind.hits.is_empty() && behind.forgotten.is_empty() {
            return Ok(());
        }
        // Only images still cached are written: a deleted image is not brought back; and a
        // forgotten image committed again since keeps its new record.
        let (changed, gone): (Vec<(ImageId, IndexRecord)>, Vec<ImageId>) = {
            let records = self.read();
            let changed = behind
                .hits
                .iter()
                .filter_map(|id| records.get(id).map(|r| (id.clone(), *r)))
                .collect();
            let gone = behind
                .forgotten
                .iter()
                .filter(|id| !records.contains_key(*id))
                .cloned()
                .collect();
            (changed, gone)
        };
        let written = self
            .driver
            .remove_all(&gone)
            .and_then(|()| self.driver.put_all(&changed))
            .and_then(|()| self.driver.flush());
        if written.is_err() {
            let mut kept = lock(&self.behind);
            kept.hits.extend(behind.hits);
            kept.forgotten.extend(behind.forgotten);
        }
        written
    }

    /// The least recently accessed images to remove so the rest fit in `max` bytes, with their
    /// generations (so only these copies go).
    pub(crate) fn prune_victims(&self, max: u64) -> Vec<(ImageId, Option<u64>)> {
        let records = self.read();
        let mut total: u64 = records.values().map(|r| r.size).sum();
        if total <= max {
            return Vec::new();
        }
        let mut by_age: Vec<_> = records.iter().collect();
        by_age.sort_by(|(a_id, a), (b_id, b)| {
            a.last_accessed
                .total_cmp(&b.last_accessed)
                .then_with(|| a_id.cmp(b_id))
        });
        let mut victims = Vec::new();
        for (id, record) in by_age {
            if total <= max {
                break;
            }
            total -= record.size;
            victims.push((id.clone(), Some(record.generation)));
        }
        victims
    }
}
