//! Prune (keep the cache under `image_cache_max_size`), clean (reap failed and stalled fills),
//! the health probe and the hit flush.

use std::time::SystemTime;

use serde::Serialize;

use super::cache::ImageCache;
use super::error::StoreError;
use super::layout::{empty_dir, remove_if_present};
use crate::ImageId;

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Pruned {
    /// Images removed.
    pub total_files_pruned: usize,
    /// Bytes those images held.
    pub total_bytes_pruned: u64,
}

/// What a clean removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Cleaned {
    /// Entries removed from `invalid/`.
    pub invalid_removed: usize,
    /// Stalled fills removed from `incomplete/`.
    pub stalled_removed: usize,
}

impl ImageCache {
    /// Removes the least recently accessed images until the cache is at most
    /// `image_cache_max_size` (a maximum of 0 empties it). Readers of a removed image keep
    /// reading their open file.
    pub fn prune(&self) -> Result<Pruned, StoreError> {
        let (files, bytes) = self.inner.prune()?;
        Ok(Pruned {
            total_files_pruned: files,
            total_bytes_pruned: bytes,
        })
    }

    /// Removes everything in `invalid/`, and the files in `incomplete/` older than
    /// `image_cache_stall_time` that no running fill is writing.
    /// (A stopped process's fills are already gone: [`open`](Self::open) removes them.)
    pub fn clean(&self) -> Result<Cleaned, StoreError> {
        let inner = &self.inner;
        let mut cleaned = Cleaned::default();
        cleaned.invalid_removed += empty_dir(&inner.layout.invalid)?.0;
        let stalled_before = SystemTime::now()
            .checked_sub(inner.config.image_cache_stall_time)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let incomplete = &inner.layout.incomplete;
        let listing = StoreError::io("read the directory", incomplete);
        for entry in std::fs::read_dir(incomplete).map_err(listing)? {
            let entry = entry.map_err(StoreError::io("read the directory", incomplete))?;
            let path = entry.path();
            let modified = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .map_err(StoreError::io("read the metadata of", &path))?;
            if modified > stalled_before {
                continue;
            }
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| ImageId::new(n).ok());
            // Checked and removed while no fill can start, so none starts in between.
            let removed = inner
                .fills
                .while_locked(|is_running| {
                    if id.as_ref().is_some_and(is_running) {
                        return Ok(false);
                    }
                    remove_if_present(&path)
                })
                .map_err(StoreError::io("remove", &path))?;
            if removed {
                cleaned.stalled_removed += 1;
            }
        }
        inner
            .metrics
            .cleaned(cleaned.invalid_removed, cleaned.stalled_removed);
        Ok(cleaned)
    }
}

impl ImageCache {
    /// Whether the cache can do its work: a file can be written in `image_cache_dir` (a probe in
    /// `incomplete/`, removed at once) and the index takes a write. The error says which failed.
    /// For health checks (`GET /healthz`); it touches the disk, so call it off the runtime.
    pub fn check_health(&self) -> Result<(), StoreError> {
        self.inner.metrics.health_probed();
        self.inner.layout.probe_writable()?;
        Ok(self.inner.catalog.driver().probe()?)
    }

    /// Writes what the hit path gathered in memory (hit counters, copies found damaged) to the
    /// index now (it is otherwise written about once a second).
    pub fn flush_hits(&self) -> Result<(), StoreError> {
        Ok(self.inner.catalog.flush_hits()?)
    }
}
