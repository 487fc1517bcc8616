//! Moving in from Glance's own cache: a directory its `sqlite` driver filled has the images
//! (same layout), its SQLite database at `image_cache_sqlite_db` (`cache.db`), and its queue
//! as empty files in `queue/`. The node keeps Glance's file untouched, puts its own index beside
//! it (`cache.db.sled`), and imports the hit counts, times and queued images once.

use std::path::{Path, PathBuf};

use super::driver::{IndexDriver, IndexRecord};
use super::error::StoreError;
use crate::{CacheConfig, ImageId};

/// Marks an index that imported (or looked for) Glance's records, so it happens once.
const IMPORTED_KEY: &str = "imported_from_glance";

/// SQLite's file header.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Glance's SQLite database at the index's path, when that is what is there.
pub(crate) fn glance_database(config: &CacheConfig) -> Option<PathBuf> {
    let path = config.db_path();
    let mut header = [0u8; 16];
    let file = std::fs::File::open(&path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    std::io::Read::read_exact(&mut &file, &mut header).ok()?;
    (&header == SQLITE_HEADER).then_some(path)
}

/// Where this cache's own index lives: `image_cache_sqlite_db`, or beside Glance's SQLite file
/// when that holds the name.
pub(crate) fn index_path(config: &CacheConfig) -> PathBuf {
    match glance_database(config) {
        Some(glance) => glance.with_extension(match glance.extension() {
            Some(ext) => format!("{}.sled", ext.to_string_lossy()),
            None => "sled".to_owned(),
        }),
        None => config.db_path(),
    }
}

/// One row of Glance's `cached_images`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GlanceRow {
    pub(crate) image_id: String,
    pub(crate) last_accessed: f64,
    pub(crate) last_modified: f64,
    pub(crate) size: u64,
    pub(crate) hits: u64,
    pub(crate) checksum: Option<String>,
}

/// Imports Glance's records and queue into `index` (any driver), once: when Glance's database
/// is there and this index has not imported before. Glance's files are only read. Returns
/// whether it wrote anything (a driver that answers `load` with what it read at open must then
/// read again).
pub(crate) fn import_once(
    index: &dyn IndexDriver,
    config: &CacheConfig,
    queue_dir: &Path,
) -> Result<bool, StoreError> {
    let Some(database) = glance_database(config) else {
        return Ok(false);
    };
    if index.number(IMPORTED_KEY)?.is_some() {
        return Ok(false);
    }
    let rows = match read_rows(&database) {
        Ok(rows) => rows,
        Err(reason) => {
            tracing::warn!(database = %database.display(), %reason, "Glance's cache database cannot be read; its hit counts and times are not imported (the images are adopted from their files)");
            Vec::new()
        }
    };
    let mut records = Vec::new();
    for row in &rows {
        let Ok(id) = ImageId::new(&row.image_id) else {
            tracing::warn!(
                image = row.image_id,
                "skipping a Glance cache record whose id this cache cannot hold"
            );
            continue;
        };
        let md5 = row
            .checksum
            .as_deref()
            .and_then(|c| hex::decode(c).ok())
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok());
        let record = IndexRecord {
            size: row.size,
            hits: row.hits,
            last_accessed: row.last_accessed,
            last_modified: row.last_modified,
            generation: index.next_generation()? + 1,
            md5,
        };
        records.push((id, record));
    }
    index.put_all(&records)?;
    let queued = queued_in(queue_dir);
    for id in &queued {
        index.enqueue(id)?;
    }
    index.set_number(IMPORTED_KEY, 1)?;
    index.flush()?;
    tracing::info!(
        database = %database.display(),
        records = records.len(),
        queued = queued.len(),
        index = %index_path(config).display(),
        "imported Glance's cache records (hit counts, access and cache times) and its queue; \
         Glance's database is left as it was, beside this cache's index"
    );
    Ok(true)
}

/// Glance's queue: the image ids named by the files of `queue/`, oldest first.
fn queued_in(queue_dir: &Path) -> Vec<ImageId> {
    let Ok(entries) = std::fs::read_dir(queue_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, ImageId)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let id = ImageId::new(entry.file_name().to_str()?).ok()?;
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, id))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, id)| id).collect()
}

/// The rows of Glance's `cached_images`, read on a thread of its own (the caller may be in a
/// runtime, or not).
#[cfg(feature = "centralized-db")]
fn read_rows(database: &Path) -> Result<Vec<GlanceRow>, String> {
    let database = database.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|err| err.to_string())?;
        runtime.block_on(async move {
            use sqlx::{ConnectOptions, Row};
            let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&database)
                .read_only(true)
                .connect()
                .await
                .map_err(|err| format!("cannot open it: {err}"))?;
            let rows = sqlx::query(
                "SELECT image_id, last_accessed, last_modified, size, hits, checksum \
                 FROM cached_images",
            )
            .fetch_all(&mut connection)
            .await
            .map_err(|err| format!("cannot read its cached_images table: {err}"))?;
            let number = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            Ok(rows
                .iter()
                .map(|row| GlanceRow {
                    image_id: row.try_get("image_id").unwrap_or_default(),
                    last_accessed: row
                        .try_get::<Option<f64>, _>("last_accessed")
                        .ok()
                        .flatten()
                        .unwrap_or(0.0),
                    last_modified: row
                        .try_get::<Option<f64>, _>("last_modified")
                        .ok()
                        .flatten()
                        .unwrap_or(0.0),
                    size: number(row.try_get("size").ok().flatten()),
                    hits: number(row.try_get("hits").ok().flatten()),
                    checksum: row.try_get("checksum").ok().flatten(),
                })
                .collect())
        })
    })
    .join()
    .map_err(|_| "the reading thread panicked".to_owned())?
}

#[cfg(not(feature = "centralized-db"))]
fn read_rows(_database: &Path) -> Result<Vec<GlanceRow>, String> {
    Err("reading SQLite needs this crate's centralized-db feature".into())
}
