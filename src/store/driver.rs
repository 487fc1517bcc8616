//! The seam between the cache and where its records live: the [`IndexDriver`] trait.
//!
//! The image files under `image_cache_dir` are the truth for bytes; a driver keeps what the
//! cache knows of each committed image (an [`IndexRecord`]) and the prefetch queue, so both
//! survive a restart. The store never asks a driver on the hit path: it keeps a mirror of the
//! records in memory (the catalog) and writes hit counters behind in batches. Every call may
//! fail, transiently or for good, and may be slow (a driver over the network); the store turns a
//! failure into a fill that does not commit or a maintenance call that reports it, never into a
//! wrong byte served.
//!
//! The embedded driver is sled (`sled_driver.rs`).

use std::fmt;

use crate::ImageId;

/// What the cache knows of one committed image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IndexRecord {
    pub(crate) size: u64,
    pub(crate) hits: u64,
    /// Epoch seconds.
    pub(crate) last_accessed: f64,
    /// Epoch seconds.
    pub(crate) last_modified: f64,
    /// Tells two commits of the same id apart; also the record's `id` in listings (Glance's row id).
    pub(crate) generation: u64,
    pub(crate) md5: Option<[u8; 16]>,
}

/// Where the cache keeps its records and its queue. Calls run on a blocking thread.
pub(crate) trait IndexDriver: Send + Sync + fmt::Debug + 'static {
    /// Every readable record. Unreadable ones are dropped (their files are adopted again).
    fn load(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError>;

    /// Records (or replaces) one image's record.
    fn put(&self, id: &ImageId, record: &IndexRecord) -> Result<(), IndexError>;

    /// Records (or replaces) several records at once.
    fn put_all(&self, records: &[(ImageId, IndexRecord)]) -> Result<(), IndexError>;

    /// Forgets these images' records; an id without one is no error.
    fn remove_all(&self, ids: &[ImageId]) -> Result<(), IndexError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), IndexError>;

    /// Writes something durable that no record depends on, to tell whether the index takes
    /// writes now (a health check).
    fn probe(&self) -> Result<(), IndexError>;

    /// A number this driver never handed out before.
    fn next_generation(&self) -> Result<u64, IndexError>;

    /// The queue in the order it will be fetched.
    fn queued(&self) -> Result<Vec<ImageId>, IndexError>;

    /// Appends `id` (durably) unless it is queued already; returns whether it was added.
    fn enqueue(&self, id: &ImageId) -> Result<bool, IndexError>;

    /// Removes `id` from the queue (durably); returns whether it was there.
    fn dequeue(&self, id: &ImageId) -> Result<bool, IndexError>;

    /// Empties the queue (durably); returns how many ids it held.
    fn clear_queue(&self) -> Result<usize, IndexError>;
}

/// The cache's index (its database of records) failed.
#[derive(Debug)]
pub struct IndexError {
    kind: IndexErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexErrorKind {
    /// Another process holds the index.
    Locked,
    /// Any other failure.
    Failed,
}

impl IndexError {
    /// Another process holds the index (a running server): the operation belongs to it.
    pub(crate) fn locked(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        IndexError {
            kind: IndexErrorKind::Locked,
            source: source.into(),
        }
    }

    /// The index could not do what was asked.
    pub(crate) fn failed(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        IndexError {
            kind: IndexErrorKind::Failed,
            source: source.into(),
        }
    }

    /// Whether another process (a running API server) holds the index: the cache is in use,
    /// and maintenance goes through that server instead.
    pub fn is_locked(&self) -> bool {
        self.kind == IndexErrorKind::Locked
    }
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // The lock's own error (sled's) is a Debug dump of the system's: nothing in it
            // helps more than this sentence.
            IndexErrorKind::Locked => f.write_str(
                "the cache index is held by another process (an image-cache-server or a tool \
                 running on this image_cache_dir): stop it, or go through it",
            ),
            IndexErrorKind::Failed => write!(f, "the cache index failed: {}", self.source),
        }
    }
}

impl std::error::Error for IndexError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
