//! The embedded [`IndexDriver`]: a sled database in `image_cache_dir/image_cache_sqlite_db`.
//!
//! Values are small fixed-size records with a version byte in front, so a future layout can be
//! told apart and an unreadable record is dropped (the file is then adopted again) rather than
//! trusted. sled (a 0.x crate) stays in this file: its errors leave it as [`IndexError`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::clock::now;
use super::driver::{IndexDriver, IndexError, IndexRecord};
use crate::sync::lock;
use crate::ImageId;

const IMAGES_TREE: &str = "images";
const QUEUE_TREE: &str = "queue";
/// Written by a health check, in the default tree (not a record, not the queue).
const HEALTH_KEY: &str = "health-probe";

/// The sled database holding the records and the queue.
#[derive(Debug)]
pub(crate) struct SledIndex {
    db: sled::Db,
    images: sled::Tree,
    /// The prefetch queue: key = a sequence number (big-endian, so FIFO), value = the id.
    queue: sled::Tree,
    /// The records read at open (the whole database is read then, to find a corrupted one),
    /// handed to the first `load` instead of reading them twice.
    opened_with: Mutex<Option<Vec<(ImageId, IndexRecord)>>>,
}

impl SledIndex {
    /// Opens the database at `path`. When sled cannot open it or cannot read it back (a
    /// corrupted database), it is moved into `aside_dir` and a new, empty one is created: the
    /// index is only a cache of what the files say.
    pub(crate) fn open_or_rebuild(
        path: &Path,
        cache_capacity: u64,
        aside_dir: &Path,
    ) -> Result<SledIndex, IndexError> {
        let (index, records) = Self::open_or_move_aside(path, cache_capacity, aside_dir)?;
        *lock(&index.opened_with) = Some(records);
        Ok(index)
    }

    fn open_or_move_aside(
        path: &Path,
        cache_capacity: u64,
        aside_dir: &Path,
    ) -> Result<(SledIndex, Vec<(ImageId, IndexRecord)>), IndexError> {
        match Self::open_waiting_for_lock(path, cache_capacity) {
            Ok(opened) => Ok(opened),
            Err(OpenFailure::Locked(err)) => Err(IndexError::locked(err)),
            Err(OpenFailure::Corrupt(reason)) => {
                let aside = move_aside(path, aside_dir);
                tracing::error!(
                    db = %path.display(),
                    moved_to = ?aside,
                    %reason,
                    "the cache index could not be read; rebuilding it from the cached files"
                );
                let (index, entries) =
                    Self::open_and_load(path, cache_capacity).map_err(OpenFailure::into_error)?;
                debug_assert!(entries.is_empty());
                Ok((index, entries))
            }
        }
    }

    /// Opens the database, waiting up to `LOCK_WAIT` for its lock. A database closed a moment
    /// ago in this process can hold its lock a little longer (sled's own threads let go of the
    /// file after the `Db` is dropped); one held by another process stays held, and is reported.
    fn open_waiting_for_lock(
        path: &Path,
        cache_capacity: u64,
    ) -> Result<(SledIndex, Vec<(ImageId, IndexRecord)>), OpenFailure> {
        const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match Self::open_and_load(path, cache_capacity) {
                Err(OpenFailure::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result,
            }
        }
    }

    fn open_and_load(
        path: &Path,
        cache_capacity: u64,
    ) -> Result<(SledIndex, Vec<(ImageId, IndexRecord)>), OpenFailure> {
        // sled 0.34 panics on some malformed files instead of returning an error.
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<_, sled::Error> {
            let db = sled::Config::new()
                .path(path)
                .cache_capacity(cache_capacity)
                .mode(sled::Mode::LowSpace)
                .open()?;
            let images = db.open_tree(IMAGES_TREE)?;
            let queue = db.open_tree(QUEUE_TREE)?;
            let index = SledIndex {
                db,
                images,
                queue,
                opened_with: Mutex::new(None),
            };
            let entries = index.load_records()?;
            Ok((index, entries))
        }));
        match opened {
            Ok(Ok(loaded)) => Ok(loaded),
            Ok(Err(err)) if is_lock_conflict(&err) => Err(OpenFailure::Locked(err)),
            Ok(Err(err)) => Err(OpenFailure::Corrupt(err.to_string())),
            Err(_) => Err(OpenFailure::Corrupt("sled panicked while opening".into())),
        }
    }

    fn load_records(&self) -> Result<Vec<(ImageId, IndexRecord)>, sled::Error> {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
        for item in self.images.iter() {
            let (key, value) = item?;
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| ImageId::new(k).ok());
            match (id, IndexRecord::decode(&value)) {
                (Some(id), Some(entry)) => entries.push((id, entry)),
                _ => unreadable.push(key),
            }
        }
        for key in unreadable {
            tracing::warn!(key = ?String::from_utf8_lossy(&key), "dropping an unreadable index record");
            self.images.remove(key)?;
        }
        Ok(entries)
    }

    /// Makes the next `load` read the records again (after writes made before it).
    pub(crate) fn reload(&self) {
        *lock(&self.opened_with) = None;
    }

    /// The queue in the order it will be fetched, with each entry's key.
    fn queue_entries(&self) -> Result<Vec<(sled::IVec, ImageId)>, sled::Error> {
        let mut entries = Vec::new();
        for item in self.queue.iter() {
            let (key, value) = item?;
            match std::str::from_utf8(&value)
                .ok()
                .and_then(|v| ImageId::new(v).ok())
            {
                Some(id) => entries.push((key, id)),
                None => {
                    self.queue.remove(key)?;
                }
            }
        }
        Ok(entries)
    }
}

impl IndexDriver for SledIndex {
    fn records(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        self.load_records().map_err(IndexError::failed)
    }

    fn number(&self, key: &str) -> Result<Option<u64>, IndexError> {
        let value = self.db.get(key).map_err(IndexError::failed)?;
        Ok(value.and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))))
    }

    fn set_number(&self, key: &str, value: u64) -> Result<(), IndexError> {
        self.db
            .insert(key, &value.to_be_bytes()[..])
            .map(drop)
            .map_err(IndexError::failed)
    }

    fn load(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError> {
        match lock(&self.opened_with).take() {
            Some(records) => Ok(records),
            None => self.load_records().map_err(IndexError::failed),
        }
    }

    fn put(&self, id: &ImageId, record: &IndexRecord) -> Result<(), IndexError> {
        self.images
            .insert(id.as_str(), &record.encode()[..])
            .map(drop)
            .map_err(IndexError::failed)
    }

    fn put_all(&self, records: &[(ImageId, IndexRecord)]) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for (id, record) in records {
            batch.insert(id.as_str(), &record.encode()[..]);
        }
        self.images.apply_batch(batch).map_err(IndexError::failed)
    }

    fn remove_all(&self, ids: &[ImageId]) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.as_str());
        }
        self.images.apply_batch(batch).map_err(IndexError::failed)
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map(drop).map_err(IndexError::failed)
    }

    fn probe(&self) -> Result<(), IndexError> {
        let stamp = now().to_be_bytes();
        self.db
            .insert(HEALTH_KEY, &stamp[..])
            .and_then(|_| self.db.flush())
            .map(drop)
            .map_err(IndexError::failed)
    }

    fn next_generation(&self) -> Result<u64, IndexError> {
        self.db.generate_id().map_err(IndexError::failed)
    }

    fn queued(&self) -> Result<Vec<ImageId>, IndexError> {
        let entries = self.queue_entries().map_err(IndexError::failed)?;
        Ok(entries.into_iter().map(|(_, id)| id).collect())
    }

    fn enqueue(&self, id: &ImageId) -> Result<bool, IndexError> {
        let enqueue = || -> Result<bool, sled::Error> {
            if self.queue_entries()?.iter().any(|(_, queued)| queued == id) {
                return Ok(false);
            }
            let seq = self.db.generate_id()?;
            self.queue.insert(seq.to_be_bytes(), id.as_str())?;
            self.db.flush()?;
            Ok(true)
        };
        enqueue().map_err(IndexError::failed)
    }

    fn dequeue(&self, id: &ImageId) -> Result<bool, IndexError> {
        let dequeue = || -> Result<bool, sled::Error> {
            let keys: Vec<sled::IVec> = self
                .queue_entries()?
                .into_iter()
                .filter(|(_, queued)| queued == id)
                .map(|(key, _)| key)
                .collect();
            for key in &keys {
                self.queue.remove(key)?;
            }
            if !keys.is_empty() {
                self.db.flush()?;
            }
            Ok(!keys.is_empty())
        };
        dequeue().map_err(IndexError::failed)
    }

    fn clear_queue(&self) -> Result<usize, IndexError> {
        let clear = || -> Result<usize, sled::Error> {
            let count = self.queue_entries()?.len();
            self.queue.clear()?;
            self.db.flush()?;
            Ok(count)
        };
        clear().map_err(IndexError::failed)
    }
}

enum OpenFailure {
    /// Another process holds the database: not corruption, and not ours to move.
    Locked(sled::Error),
    Corrupt(String),
}

impl OpenFailure {
    fn into_error(self) -> IndexError {
        match self {
            OpenFailure::Locked(err) => IndexError::locked(err),
            OpenFailure::Corrupt(reason) => IndexError::failed(reason),
        }
    }
}

fn is_lock_conflict(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
        || err.to_string().contains("could not acquire lock")
}

/// Moves a broken database into `aside_dir` (the cache's `invalid/`, which the cleaner empties),
/// so nothing but the layout lives in the base directory. Falls back to deleting it.
fn move_aside(path: &Path, aside_dir: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let target = aside_dir.join(format!("{name}.corrupt-{stamp}"));
    match std::fs::rename(path, &target) {
        Ok(()) => Some(target),
        Err(err) => {
            tracing::warn!(%err, "could not move the broken index aside; removing it");
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
            None
        }
    }
}
