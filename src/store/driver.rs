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

/// The version byte in front of an [`IndexRecord::encode`]d record.
const RECORD_VERSION: u8 = 1;
/// The length of an encoded record.
pub(crate) const RECORD_LEN: usize = 1 + 8 * 5 + 1 + 16;

impl IndexRecord {
    /// The record as a driver stores it: fixed-size, with a version byte in front, so a future
    /// layout can be told apart.
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&self.size.to_be_bytes());
        out[9..17].copy_from_slice(&self.hits.to_be_bytes());
        out[17..25].copy_from_slice(&self.last_accessed.to_be_bytes());
        out[25..33].copy_from_slice(&self.last_modified.to_be_bytes());
        out[33..41].copy_from_slice(&self.generation.to_be_bytes());
        if let Some(md5) = self.md5 {
            out[41] = 1;
            out[42..58].copy_from_slice(&md5);
        }
        out
    }

    /// A record [`encode`](Self::encode) wrote; `None` for anything else (another version, a
    /// truncated value), which a driver drops rather than trusts.
    pub(crate) fn decode(raw: &[u8]) -> Option<IndexRecord> {
        if raw.len() != RECORD_LEN || raw[0] != RECORD_VERSION {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().unwrap());
        let f64_at = |at: usize| f64::from_be_bytes(raw[at..at + 8].try_into().unwrap());
        let md5 = match raw[41] {
            0 => None,
            1 => Some(raw[42..58].try_into().unwrap()),
            _ => return None,
        };
        Some(IndexRecord {
            size: u64_at(1),
            hits: u64_at(9),
            last_accessed: f64_at(17),
            last_modified: f64_at(25),
            generation: u64_at(33),
            md5,
        })
    }
}

/// Where the cache keeps its records and its queue. Calls run on a blocking thread.
///
/// A driver may be decorated: the `centralized_db` mirror wraps any driver, answers every call
/// from it, and keeps its own bookkeeping in it ([`number`](Self::number)).
pub(crate) trait IndexDriver: Send + Sync + fmt::Debug + 'static {
    /// Every readable record. Unreadable ones are dropped (their files are adopted again).
    fn load(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError>;

    /// Every readable record, read now (`load` may answer with the records read at open).
    #[cfg_attr(not(feature = "centralized-db"), allow(dead_code))]
    fn records(&self) -> Result<Vec<(ImageId, IndexRecord)>, IndexError>;

    /// A number kept beside the records under `key` (not a record, not the queue): what a
    /// decorator of the driver keeps across restarts.
    fn number(&self, key: &str) -> Result<Option<u64>, IndexError>;

    /// Keeps `value` under `key` (durably at the next [`flush`](Self::flush)).
    fn set_number(&self, key: &str, value: u64) -> Result<(), IndexError>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let entry = IndexRecord {
            size: 42,
            hits: 7,
            last_accessed: 1.5,
            last_modified: 2.25,
            generation: 9,
            md5: Some([3; 16]),
        };
        assert_eq!(IndexRecord::decode(&entry.encode()), Some(entry));
        let no_md5 = IndexRecord { md5: None, ..entry };
        assert_eq!(IndexRecord::decode(&no_md5.encode()), Some(no_md5));
    }

    #[test]
    fn unknown_versions_and_lengths_are_not_trusted() {
        let mut raw = IndexRecord {
            size: 1,
            hits: 0,
            last_accessed: 0.0,
            last_modified: 0.0,
            generation: 0,
            md5: None,
        }
        .encode();
        raw[0] = 2;
        assert_eq!(IndexRecord::decode(&raw), None);
        assert_eq!(IndexRecord::decode(&raw[..10]), None);
    }
}
