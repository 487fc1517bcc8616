//! The SQL of the central index, in each server's dialect, and the times as Glance stores them.
//!
//! The tables are Glance's (`2024_1_expand01_add_cache_tables`), created exactly so when absent,
//! so Glance's own API nodes and these nodes share one fleet view. One table is this crate's own
//! (`tower_image_cache_evictions`, the news of deleted images); Glance ignores it.
//!
//! Times are naive UTC datetimes. They travel as text (`YYYY-MM-DD HH:MM:SS.ffffff`, SQLAlchemy's
//! form), formatted and read by each server, so no time zone setting of a session matters.

use crate::config::DatabaseKind;

/// The statements for one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub(crate) kind: DatabaseKind,
}

/// The parameters of one row of `cached_images`, as written.
pub(crate) const ROW_PARAMS: usize = 7;

/// The most rows one statement writes (well under every server's parameter limit).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

impl Dialect {
    pub(crate) fn new(kind: DatabaseKind) -> Self {
        Dialect { kind }
    }

    /// The `n`th (1-based) parameter's placeholder.
    pub(crate) fn param(&self, n: usize) -> String {
        match self.kind {
            DatabaseKind::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }

    /// A time parameter, converted from its text form.
    pub(crate) fn time_param(&self, n: usize) -> String {
        match self.kind {
            DatabaseKind::Postgres => format!("CAST(${n} AS TIMESTAMP)"),
            _ => "?".to_owned(),
        }
    }

    /// A time column, read as text.
    fn time_text(&self, column: &str) -> String {
        match self.kind {
            DatabaseKind::Postgres => format!("to_char({column}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            DatabaseKind::MySql => {
                format!("CAST(DATE_FORMAT({column}, '%Y-%m-%d %H:%i:%s.%f') AS CHAR)")
            }
            DatabaseKind::Sqlite => format!("CAST({column} AS TEXT)"),
        }
    }

    /// An integer column, read as a 64-bit integer.
    fn big(&self, column: &str) -> String {
        match self.kind {
            DatabaseKind::MySql => format!("CAST({column} AS SIGNED)"),
            _ => format!("CAST({column} AS BIGINT)"),
        }
    }

    /// Glance's two tables and this crate's evictions table, each created only when absent:
    /// `(table, statement)`, in the order they must be made.
    pub(crate) fn create_tables(&self) -> [(&'static str, String); 3] {
        let (id, tail) = match self.kind {
            DatabaseKind::Postgres => ("BIGSERIAL", ""),
            DatabaseKind::MySql => (
                "BIGINT NOT NULL AUTO_INCREMENT",
                " ENGINE=InnoDB DEFAULT CHARSET=utf8",
            ),
            DatabaseKind::Sqlite => ("INTEGER NOT NULL", ""),
        };
        let (fk, time) = match self.kind {
            DatabaseKind::Sqlite => ("INTEGER", "DATETIME"),
            DatabaseKind::Postgres => ("BIGINT", "TIMESTAMP WITHOUT TIME ZONE"),
            DatabaseKind::MySql => ("BIGINT", "DATETIME"),
        };
        [
            (
                "node_reference",
                format!(
                "CREATE TABLE IF NOT EXISTS node_reference (\
                 node_reference_id {id}, \
                 node_reference_url VARCHAR(255) NOT NULL, \
                 PRIMARY KEY (node_reference_id), \
                 CONSTRAINT uq_node_reference_node_reference_url UNIQUE (node_reference_url)){tail}"
            ),
            ),
            (
                "cached_images",
                format!(
                    "CREATE TABLE IF NOT EXISTS cached_images (\
                 id {id}, \
                 image_id VARCHAR(36) NOT NULL, \
                 last_accessed {time} NOT NULL, \
                 last_modified {time} NOT NULL, \
                 size BIGINT NOT NULL, \
                 hits INTEGER NOT NULL, \
                 checksum VARCHAR(32), \
                 node_reference_id {fk} NOT NULL, \
                 PRIMARY KEY (id), \
                 FOREIGN KEY (node_reference_id) REFERENCES node_reference (node_reference_id), \
                 CONSTRAINT ix_cached_images_image_id_node_reference_id \
                 UNIQUE (image_id, node_reference_id)){tail}"
                ),
            ),
            (
                "tower_image_cache_evictions",
                format!(
                    "CREATE TABLE IF NOT EXISTS tower_image_cache_evictions (\
                 id {id}, \
                 image_id VARCHAR(36) NOT NULL, \
                 node_reference_id {fk} NOT NULL, \
                 created_at {time} NOT NULL, \
                 PRIMARY KEY (id)){tail}"
                ),
            ),
        ]
    }

    /// Adds a node's row unless it is there: `(url)`.
    pub(crate) fn insert_node(&self) -> String {
        match self.kind {
            DatabaseKind::Postgres => {
                "INSERT INTO node_reference (node_reference_url) VALUES ($1) \
                 ON CONFLICT (node_reference_url) DO NOTHING"
                    .to_owned()
            }
            DatabaseKind::MySql => {
                "INSERT IGNORE INTO node_reference (node_reference_url) VALUES (?)".to_owned()
            }
            DatabaseKind::Sqlite => {
                "INSERT OR IGNORE INTO node_reference (node_reference_url) VALUES (?)".to_owned()
            }
        }
    }

    /// A node's id: `(url)`.
    pub(crate) fn node_id(&self) -> String {
        format!(
            "SELECT {} FROM node_reference WHERE node_reference_url = {}",
            self.big("node_reference_id"),
            self.param(1)
        )
    }

    /// Every node's URL.
    pub(crate) fn node_urls(&self) -> &'static str {
        "SELECT node_reference_url FROM node_reference ORDER BY node_reference_url"
    }

    /// One node's rows: `(node id)` → image_id, size, hits, checksum, last_accessed,
    /// last_modified.
    pub(crate) fn rows_of_node(&self) -> String {
        format!(
            "SELECT image_id, {}, {}, checksum, {}, {} FROM cached_images \
             WHERE node_reference_id = {} ORDER BY image_id",
            self.big("size"),
            self.big("hits"),
            self.time_text("last_accessed"),
            self.time_text("last_modified"),
            self.param(1)
        )
    }

    /// Every node's rows, with the node's URL first.
    pub(crate) fn all_rows(&self) -> String {
        format!(
            "SELECT n.node_reference_url, c.image_id, {}, {}, c.checksum, {}, {} \
             FROM cached_images c JOIN node_reference n \
             ON n.node_reference_id = c.node_reference_id \
             ORDER BY n.node_reference_url, c.image_id",
            self.big("c.size"),
            self.big("c.hits"),
            self.time_text("c.last_accessed"),
            self.time_text("c.last_modified"),
        )
    }

    /// The URLs of the nodes holding an image: `(image id)`.
    pub(crate) fn nodes_of_image(&self) -> String {
        format!(
            "SELECT n.node_reference_url FROM cached_images c JOIN node_reference n \
             ON n.node_reference_id = c.node_reference_id WHERE c.image_id = {} \
             ORDER BY n.node_reference_url",
            self.param(1)
        )
    }

    /// Inserts or updates `rows` rows of one node: each `(image_id, last_accessed,
    /// last_modified, size, hits, checksum, node id)` (`?` placeholders cannot be repeated).
    pub(crate) fn upsert(&self, rows: usize) -> String {
        let values: Vec<String> = (0..rows)
            .map(|row| {
                let at = row * ROW_PARAMS;
                format!(
                    "({}, {}, {}, {}, {}, {}, {})",
                    self.param(at + 1),
                    self.time_param(at + 2),
                    self.time_param(at + 3),
                    self.param(at + 4),
                    self.param(at + 5),
                    self.param(at + 6),
                    self.param(at + 7),
                )
            })
            .collect();
        let columns = ["last_accessed", "last_modified", "size", "hits", "checksum"];
        let update = match self.kind {
            DatabaseKind::MySql => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!("ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
            _ => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(
                    "ON CONFLICT (image_id, node_reference_id) DO UPDATE SET {}",
                    set.join(", ")
                )
            }
        };
        format!(
            "INSERT INTO cached_images \
             (image_id, last_accessed, last_modified, size, hits, checksum, node_reference_id) \
             VALUES {} {update}",
            values.join(", ")
        )
    }

    /// Removes `ids` rows of one node: the node id, then each image id.
    pub(crate) fn delete_rows(&self, ids: usize) -> String {
        let list: Vec<String> = (0..ids).map(|i| self.param(i + 2)).collect();
        format!(
            "DELETE FROM cached_images WHERE node_reference_id = {} AND image_id IN ({})",
            self.param(1),
            list.join(", ")
        )
    }

    /// Removes every row of one node: `(node id)`.
    pub(crate) fn delete_node_rows(&self) -> String {
        format!(
            "DELETE FROM cached_images WHERE node_reference_id = {}",
            self.param(1)
        )
    }

    /// Removes a node: `(node id)`.
    pub(crate) fn delete_node(&self) -> String {
        format!(
            "DELETE FROM node_reference WHERE node_reference_id = {}",
            self.param(1)
        )
    }

    /// Announces a deleted image: `(image id, node id, created_at)`.
    pub(crate) fn insert_eviction(&self) -> String {
        format!(
            "INSERT INTO tower_image_cache_evictions (image_id, node_reference_id, created_at) \
             VALUES ({}, {}, {})",
            self.param(1),
            self.param(2),
            self.time_param(3)
        )
    }

    /// The newest eviction's id (0 when none).
    pub(crate) fn last_eviction(&self) -> String {
        format!(
            "SELECT {} FROM tower_image_cache_evictions",
            self.big("COALESCE(MAX(id), 0)")
        )
    }

    /// Evictions after an id, announced by other nodes: `(after id, own node id)`.
    pub(crate) fn evictions_after(&self) -> String {
        format!(
            "SELECT {}, image_id FROM tower_image_cache_evictions \
             WHERE id > {} AND node_reference_id <> {} ORDER BY id",
            self.big("id"),
            self.param(1),
            self.param(2)
        )
    }

    /// Forgets evictions older than a time: `(created_at)`.
    pub(crate) fn expire_evictions(&self) -> String {
        format!(
            "DELETE FROM tower_image_cache_evictions WHERE created_at < {}",
            self.time_param(1)
        )
    }
}

/// Epoch seconds as the naive UTC text the tables hold.
/// The longest image id Glance's tables hold (`VARCHAR(36)`: a UUID).
pub(crate) const MAX_IMAGE_ID: usize = 36;

/// Whether `id` fits Glance's tables; a longer one stays a local record only, never a row that
/// would fail (and stop) a whole replication round.
pub(crate) fn fits_the_tables(id: &crate::ImageId) -> bool {
    id.as_str().len() <= MAX_IMAGE_ID
}

pub(crate) fn time_text(epoch: f64) -> String {
    let micros = (epoch.max(0.0) * 1e6).round() as i64;
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// The text of a time column back to epoch seconds; `None` when it is not a time.
pub(crate) fn parse_time(text: &str) -> Option<f64> {
    let text = text.trim();
    let time = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(time.and_utc().timestamp_micros() as f64 / 1e6)
}

/// An id longer than Glance's tables hold: logged (once per id, for the first thousand), and
/// kept out of the database.
pub(crate) fn too_long(id: &crate::ImageId) {
    static WARNED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashSet<crate::ImageId>>,
    > = std::sync::OnceLock::new();
    let mut warned = crate::sync::lock(WARNED.get_or_init(std::sync::Mutex::default));
    if warned.len() < 1000 && warned.insert(id.clone()) {
        tracing::warn!(
            image = %id,
            max = MAX_IMAGE_ID,
            "this image id is longer than Glance's central tables hold; it is cached on this \
             node only, never listed in the central database"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_microsecond() {
        let epoch = 1_764_547_200.123_456;
        let text = time_text(epoch);
        assert_eq!(text, "2025-12-01 00:00:00.123456");
        assert!((parse_time(&text).unwrap() - epoch).abs() < 1e-6);
        assert_eq!(parse_time("2025-12-01 00:00:00"), Some(1_764_547_200.0));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let pg = Dialect::new(DatabaseKind::Postgres).upsert(2);
        assert!(pg.contains("($8, CAST($9 AS TIMESTAMP)"), "{pg}");
        assert!(pg.contains("$14)"), "{pg}");
        let my = Dialect::new(DatabaseKind::MySql).upsert(1);
        assert!(
            my.contains("VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY"),
            "{my}"
        );
    }
}
