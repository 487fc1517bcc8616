//! [`CentralDb`]: the connection pool to the central database and the statements the index runs.
//!
//! sqlx's `Any` driver talks to PostgreSQL, MySQL/MariaDB and SQLite through one API; the
//! statements are each server's own (`central_sql.rs`). Every call is async and must run on a
//! tokio runtime; the index runs them on its own (`replicator.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::central_error::CentralError;
use super::central_sql::{parse_time, time_text, Dialect, ROWS_PER_STATEMENT};
use super::driver::IndexRecord;
use crate::config::DatabaseUrl;
use crate::ImageId;

/// How long a statement may wait for a connection before the database counts as unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's row, as the central database holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CentralRow {
    pub(crate) image_id: String,
    pub(crate) size: u64,
    pub(crate) hits: u64,
    pub(crate) checksum: Option<String>,
    pub(crate) last_accessed: f64,
    pub(crate) last_modified: f64,
}

/// The pool and the dialect of one central database.
#[derive(Debug, Clone)]
pub(crate) struct CentralDb {
    pool: AnyPool,
    sql: Dialect,
    url: DatabaseUrl,
    /// Whether `create_tables` succeeded through this pool (shared by its clones).
    tables_made: Arc<AtomicBool>,
}

/// A statement's answer, or what failed.
pub(crate) type DbResult<T> = Result<T, CentralError>;

impl CentralDb {
    /// A pool that connects when first used (so a node starts while the database is down).
    /// Must be called on a tokio runtime.
    pub(crate) fn lazy(url: &DatabaseUrl, max_connections: u32) -> DbResult<CentralDb> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy(url.client_url())
            .map_err(|source| CentralError::Unusable {
                url: url.to_string(),
                source,
            })?;
        Ok(CentralDb {
            pool,
            sql: Dialect::new(url.kind()),
            url: url.clone(),
            tables_made: Arc::default(),
        })
    }

    /// The database, for messages (no password).
    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The pool, for the statements of the other tables' files.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The server's dialect.
    pub(crate) fn dialect(&self) -> Dialect {
        self.sql
    }

    pub(crate) fn failed(&self, doing: &'static str, source: sqlx::Error) -> CentralError {
        CentralError::Statement {
            url: self.url.to_string(),
            doing,
            source,
        }
    }

    /// Creates the tables that are missing. Nodes starting together may race to create one
    /// (PostgreSQL then refuses all but one): a creation that fails while the table is there
    /// after all is no error.
    pub(crate) async fn create_tables(&self) -> DbResult<()> {
        let tables = self.sql.create_tables().into_iter();
        for (table, statement) in tables.chain(super::central_fills::create_tables(self.sql)) {
            if let Err(err) = sqlx::query(&statement).execute(&self.pool).await {
                let probe = format!("SELECT COUNT(*) FROM {table} WHERE 1 = 0");
                if sqlx::query(&probe).fetch_one(&self.pool).await.is_err() {
                    return Err(self.failed("to create the cache tables", err));
                }
            }
        }
        // Best effort: a role that may create tables but not drop them leaves it behind.
        let earlier = super::central_fills::drop_earlier_table();
        let _ = sqlx::query(&earlier).execute(&self.pool).await;
        self.tables_made.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Creates the tables unless this pool already did: a node answering a fleet query before
    /// its first round (a fresh database) finds them there.
    pub(crate) async fn ensure_tables(&self) -> DbResult<()> {
        if self.tables_made.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.create_tables().await
    }

    /// This node's id, its row added when missing.
    pub(crate) async fn register_node(&self, url: &str) -> DbResult<i64> {
        sqlx::query(&self.sql.insert_node())
            .bind(url)
            .execute(&self.pool)
            .await
            .map_err(|err| self.failed("to add this node to node_reference", err))?;
        let row = sqlx::query(&self.sql.node_id())
            .bind(url)
            .fetch_one(&self.pool)
            .await
            .map_err(|err| self.failed("to read this node's id", err))?;
        row.try_get::<i64, _>(0)
            .map_err(|err| self.failed("to read this node's id", err))
    }

    /// Every node's URL.
    pub(crate) async fn node_urls(&self) -> DbResult<Vec<String>> {
        let rows = sqlx::query(self.sql.node_urls())
            .fetch_all(&self.pool)
            .await
            .map_err(|err| self.failed("to list the nodes", err))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|err| self.failed("to list the nodes", err))
    }

    /// The URLs of the nodes holding `id`.
    pub(crate) async fn nodes_of_image(&self, id: &ImageId) -> DbResult<Vec<String>> {
        let rows = sqlx::query(&self.sql.nodes_of_image())
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|err| self.failed("to list the nodes holding an image", err))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|err| self.failed("to list the nodes holding an image", err))
    }

    /// One node's rows.
    pub(crate) async fn rows_of_node(&self, node: i64) -> DbResult<Vec<CentralRow>> {
        let rows = sqlx::query(&self.sql.rows_of_node())
            .bind(node)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| self.failed("to read this node's rows", err))?;
        rows.iter()
            .map(|row| read_row(row, 0))
            .collect::<Result<_, _>>()
            .map_err(|err| self.failed("to read this node's rows", err))
    }

    /// Every row of every node, with the node's URL.
    pub(crate) async fn all_rows(&self) -> DbResult<Vec<(String, CentralRow)>> {
        let rows = sqlx::query(&self.sql.all_rows())
            .fetch_all(&self.pool)
            .await
            .map_err(|err| self.failed("to list the fleet's cached images", err))?;
        rows.iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, read_row(row, 1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|err| self.failed("to list the fleet's cached images", err))
    }

    /// Writes these records of node `node` (inserted or updated); one statement per 200.
    pub(crate) async fn upsert(
        &self,
        node: i64,
        records: &[(ImageId, IndexRecord)],
    ) -> DbResult<u64> {
        let mut written = 0;
        for batch in records.chunks(ROWS_PER_STATEMENT) {
            let statement = self.sql.upsert(batch.len());
            let mut query = sqlx::query(&statement);
            for (id, record) in batch {
                let hits = i32::try_from(record.hits).unwrap_or(i32::MAX);
                query = query
                    .bind(id.as_str())
                    .bind(time_text(record.last_accessed))
                    .bind(time_text(record.last_modified))
                    .bind(i64::try_from(record.size).unwrap_or(i64::MAX))
                    .bind(hits)
                    .bind(record.md5.map(hex::encode))
                    .bind(node);
            }
            written += query
                .execute(&self.pool)
                .await
                .map_err(|err| self.failed("to write this node's rows", err))?
                .rows_affected();
        }
        Ok(written)
    }

    /// Removes these images' rows of node `node`.
    pub(crate) async fn delete_rows(&self, node: i64, ids: &[ImageId]) -> DbResult<u64> {
        let mut removed = 0;
        for batch in ids.chunks(ROWS_PER_STATEMENT) {
            let statement = self.sql.delete_rows(batch.len());
            let mut query = sqlx::query(&statement).bind(node);
            for id in batch {
                query = query.bind(id.as_str());
            }
            removed += query
                .execute(&self.pool)
                .await
                .map_err(|err| self.failed("to remove this node's rows", err))?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Forgets the node at `url`: its rows, then its `node_reference` row. Returns how many
    /// image rows went, or `None` when no such node is known.
    pub(crate) async fn forget_node(&self, url: &str) -> DbResult<Option<u64>> {
        let found = sqlx::query(&self.sql.node_id())
            .bind(url)
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| self.failed("to find the node", err))?;
        let Some(row) = found else { return Ok(None) };
        let node: i64 = row
            .try_get(0)
            .map_err(|err| self.failed("to find the node", err))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|err| self.failed("to begin forgetting the node", err))?;
        let rows = sqlx::query(&self.sql.delete_node_rows())
            .bind(node)
            .execute(&mut *tx)
            .await
            .map_err(|err| self.failed("to remove the node's rows", err))?
            .rows_affected();
        sqlx::query(&self.sql.delete_node())
            .bind(node)
            .execute(&mut *tx)
            .await
            .map_err(|err| self.failed("to remove the node", err))?;
        tx.commit()
            .await
            .map_err(|err| self.failed("to commit forgetting the node", err))?;
        Ok(Some(rows))
    }

    /// Announces that `id` was deleted, seen by node `node`.
    pub(crate) async fn announce_eviction(&self, node: i64, id: &ImageId, at: f64) -> DbResult<()> {
        sqlx::query(&self.sql.insert_eviction())
            .bind(id.as_str())
            .bind(node)
            .bind(time_text(at))
            .execute(&self.pool)
            .await
            .map_err(|err| self.failed("to announce a deleted image", err))
            .map(drop)
    }

    /// The newest eviction's id.
    pub(crate) async fn last_eviction(&self) -> DbResult<i64> {
        let row = sqlx::query(&self.sql.last_eviction())
            .fetch_one(&self.pool)
            .await
            .map_err(|err| self.failed("to read the evictions", err))?;
        row.try_get(0)
            .map_err(|err| self.failed("to read the evictions", err))
    }

    /// Images other nodes announced deleted after eviction `after`, with each one's id.
    pub(crate) async fn evictions_after(
        &self,
        after: i64,
        own: i64,
    ) -> DbResult<Vec<(i64, String)>> {
        let rows = sqlx::query(&self.sql.evictions_after())
            .bind(after)
            .bind(own)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| self.failed("to read the evictions", err))?;
        rows.iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|err| self.failed("to read the evictions", err))
    }

    /// Forgets evictions announced before `before` (epoch seconds).
    pub(crate) async fn expire_evictions(&self, before: f64) -> DbResult<()> {
        sqlx::query(&self.sql.expire_evictions())
            .bind(time_text(before))
            .execute(&self.pool)
            .await
            .map_err(|err| self.failed("to forget old evictions", err))
            .map(drop)
    }

    /// Closes every connection, for good (the node is stopping).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

fn read_row(row: &AnyRow, from: usize) -> Result<CentralRow, sqlx::Error> {
    let time = |at: usize| -> Result<f64, sqlx::Error> {
        let text: String = row.try_get(at)?;
        parse_time(&text)
            .ok_or_else(|| sqlx::Error::Decode(format!("{text:?} is not a time").into()))
    };
    Ok(CentralRow {
        image_id: row.try_get(from)?,
        size: u64::try_from(row.try_get::<i64, _>(from + 1)?).unwrap_or_default(),
        hits: u64::try_from(row.try_get::<i64, _>(from + 2)?).unwrap_or_default(),
        checksum: row.try_get(from + 3)?,
        last_accessed: time(from + 4)?,
        last_modified: time(from + 5)?,
    })
}
