//! Prune (keep the cache under `image_cache_max_size`) and clean (reap failed and stalled fills).

use std::io;
use std::time::SystemTime;

use serde::Serialize;

use super::fs::remove_if_present;
use super::{lock, ImageCache, Inner, StoreError};
use crate::ImageId;

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pruned {
    /// Images removed.
    pub total_files_pruned: usize,
    /// Bytes those images held.
    pub total_bytes_pruned: u64,
}

/// What a clean removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    pub fn clean(&self) -> Result<Cleaned, StoreError> {
        let inner = &self.inner;
        let mut cleaned = Cleaned::default();
        for entry in std::fs::read_dir(&inner.layout.invalid)? {
            let entry = entry?;
            let removed = if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::remove_file(entry.path())
            };
            match removed {
                Ok(()) => cleaned.invalid_removed += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
        let stalled_before = SystemTime::now()
            .checked_sub(inner.config.image_cache_stall_time)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for entry in std::fs::read_dir(&inner.layout.incomplete)? {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            if modified > stalled_before {
                continue;
            }
            let name = entry.file_name();
            let running = name.to_str().and_then(|n| ImageId::new(n).ok());
            // Checked and removed under the fills lock, so a fill cannot start in between.
            let fills = lock(&inner.fills);
            if running.as_ref().is_some_and(|id| fills.contains_key(id)) {
                continue;
            }
            if remove_if_present(&entry.path())? {
                cleaned.stalled_removed += 1;
            }
        }
        Ok(cleaned)
    }
}

impl Inner {
    pub(crate) fn prune(&self) -> Result<(usize, u64), StoreError> {
        let max = self.config.image_cache_max_size;
        let victims: Vec<(ImageId, u64)> = {
            let entries = self.read_entries();
            let mut total: u64 = entries.values().map(|e| e.size).sum();
            if total <= max {
                return Ok((0, 0));
            }
            let mut by_age: Vec<_> = entries.iter().collect();
            by_age.sort_by(|(a_id, a), (b_id, b)| {
                a.last_accessed
                    .total_cmp(&b.last_accessed)
                    .then_with(|| a_id.cmp(b_id))
            });
            let mut victims = Vec::new();
            for (id, entry) in by_age {
                if total <= max {
                    break;
                }
                total -= entry.size;
                victims.push((id.clone(), entry.generation));
            }
            victims
        };
        // Only the copies chosen above go: an image deleted and committed again meanwhile stays.
        let removed = self.remove_committed(
            victims
                .iter()
                .map(|(id, generation)| (id, Some(*generation))),
        )?;
        Ok((removed.len(), removed.iter().map(|e| e.size).sum()))
    }
}
