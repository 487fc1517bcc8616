//! What the cache tells of its images: [`CachedImage`] and [`FillProgress`].

use serde::Serialize;

use super::driver::IndexRecord;
use crate::ImageId;

/// A cached image as operators see it: the record of `GET /v2/cache`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CachedImage {
    /// The record's own number, unique in this cache's index (Glance's row `id`): a new commit
    /// of the same image gets a new one.
    pub id: u64,
    /// The image id.
    pub image_id: String,
    /// Complete deliveries served from the cache.
    pub hits: u64,
    /// When it was last served (or committed), in epoch seconds.
    pub last_accessed: f64,
    /// When it entered the cache, in epoch seconds.
    pub last_modified: f64,
    /// Its size in bytes.
    pub size: u64,
    /// The MD5 of its bytes as lowercase hex, when known (`null` otherwise, as Glance sends).
    pub checksum: Option<String>,
}

impl CachedImage {
    pub(crate) fn new(id: &ImageId, record: &IndexRecord) -> Self {
        CachedImage {
            id: record.generation,
            image_id: id.to_string(),
            hits: record.hits,
            last_accessed: record.last_accessed,
            last_modified: record.last_modified,
            size: record.size,
            checksum: record.md5.map(hex::encode),
        }
    }
}

/// A fill in progress, as `GET /v2/cache` lists it under `in_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FillProgress {
    /// The image being filled.
    pub image_id: ImageId,
    /// Bytes written so far.
    pub bytes_written: u64,
    /// The image's size, when the fill knows it.
    pub expected_size: Option<u64>,
}
