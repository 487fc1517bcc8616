//! Bringing the index and the files back into agreement when the cache opens.

use std::collections::HashMap;
use std::fs;

use super::clock::{epoch_seconds, now};
use super::driver::{IndexDriver, IndexRecord};
use super::error::StoreError;
use super::layout::{remove_if_present, Layout};
use crate::{CacheConfig, ImageId};

/// Returns the records the cache starts with, after making the index agree with the files:
/// - an entry whose file is gone is dropped;
/// - a committed file without an entry is adopted (only a verified fill is ever renamed into
///   place, so a file there lost its entry to a crash between rename and index write);
/// - a file whose size disagrees with its entry is removed with the entry: it is not the image
///   that was verified.
///
/// Files in `incomplete/` are left for the cleaner; they are never served.
pub(crate) fn reconcile(
    layout: &Layout,
    config: &CacheConfig,
    index: &dyn IndexDriver,
    loaded: Vec<(ImageId, IndexRecord)>,
) -> Result<HashMap<ImageId, IndexRecord>, StoreError> {
    let mut indexed: HashMap<ImageId, IndexRecord> = loaded.into_iter().collect();
    let mut entries = HashMap::with_capacity(indexed.len());
    let mut adopted = Vec::new();
    let mut damaged = Vec::new();

    let base = &layout.base;
    for dir_entry in fs::read_dir(base).map_err(StoreError::io("read the directory", base))? {
        let dir_entry = dir_entry.map_err(StoreError::io("read the directory", base))?;
        let name = dir_entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if config.is_reserved_name(name) {
            continue;
        }
        let Ok(id) = ImageId::new(name) else {
            tracing::warn!(
                file = name,
                "ignoring a file in the cache directory that is not an image id"
            );
            continue;
        };
        let meta = dir_entry
            .metadata()
            .map_err(StoreError::io("read the metadata of", dir_entry.path()))?;
        if !meta.is_file() {
            continue;
        }
        match indexed.remove(&id) {
            Some(entry) if entry.size == meta.len() => {
                entries.insert(id, entry);
            }
            Some(entry) => {
                tracing::warn!(image = %id, indexed = entry.size, on_disk = meta.len(),
                    "removing a cached file whose size disagrees with the index");
                let path = layout.committed(&id);
                remove_if_present(&path).map_err(StoreError::io("remove", path))?;
                damaged.push(id);
            }
            None => {
                let modified = meta.modified().map_or_else(|_| now(), epoch_seconds);
                tracing::info!(image = %id, size = meta.len(), "adopting a cached file missing from the index");
                let entry = IndexRecord {
                    size: meta.len(),
                    hits: 0,
                    last_accessed: modified,
                    last_modified: modified,
                    // A row id of its own, as a commit gets (0 only if the index cannot count).
                    generation: index.next_generation().map_or(0, |g| g + 1),
                    md5: None,
                };
                adopted.push((id.clone(), entry));
                entries.insert(id, entry);
            }
        }
    }

    let orphaned: Vec<ImageId> = indexed.into_keys().collect();
    for id in &orphaned {
        tracing::info!(image = %id, "dropping an index entry whose file is gone");
    }
    if !orphaned.is_empty() || !damaged.is_empty() || !adopted.is_empty() {
        let gone: Vec<ImageId> = orphaned.into_iter().chain(damaged).collect();
        index.remove_all(&gone)?;
        index.put_all(&adopted)?;
        index.flush()?;
    }
    Ok(entries)
}
