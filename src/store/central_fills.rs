//! The fleet's fills in flight (`tower_image_cache_fills`, a table of this crate's own that
//! Glance ignores): one row an image being read from the backend, naming the node that reads it
//! and its last heartbeat, so the other nodes follow that node instead of reading it too.
//!
//! The image id is the table's key: of nodes claiming one image at once, one row is written and
//! every node reads back the same claimant. A claim whose heartbeat is older than the staleness
//! limit (its node died) is taken over.

use super::central_db::{CentralDb, DbResult};
use super::central_sql::{time_text, Dialect};
use crate::config::DatabaseKind;
use crate::ImageId;

/// The table, created when absent: `(table, statement)`.
pub(crate) fn create_table(sql: Dialect) -> (&'static str, String) {
    let (time, tail) = match sql.kind {
        DatabaseKind::Postgres => ("TIMESTAMP WITHOUT TIME ZONE", ""),
        DatabaseKind::MySql => ("DATETIME(6)", " ENGINE=InnoDB DEFAULT CHARSET=utf8"),
        DatabaseKind::Sqlite => ("DATETIME", ""),
    };
    (
        "tower_image_cache_fills",
        format!(
            "CREATE TABLE IF NOT EXISTS tower_image_cache_fills (\
             image_id VARCHAR(36) NOT NULL, \
             node_reference_url VARCHAR(255) NOT NULL, \
             heartbeat {time} NOT NULL, \
             PRIMARY KEY (image_id)){tail}"
        ),
    )
}

/// Claims an image unless a row is there: `(image id, node url, heartbeat)`.
fn insert_claim(sql: Dialect) -> String {
    let values = format!(
        "(image_id, node_reference_url, heartbeat) VALUES ({}, {}, {})",
        sql.param(1),
        sql.param(2),
        sql.time_param(3)
    );
    match sql.kind {
        DatabaseKind::Postgres => {
            format!(
                "INSERT INTO tower_image_cache_fills {values} ON CONFLICT (image_id) DO NOTHING"
            )
        }
        DatabaseKind::MySql => format!("INSERT IGNORE INTO tower_image_cache_fills {values}"),
        DatabaseKind::Sqlite => format!("INSERT OR IGNORE INTO tower_image_cache_fills {values}"),
    }
}

/// Removes an image's claim made stale: `(image id, heartbeat before)`.
fn expire_claim(sql: Dialect) -> String {
    format!(
        "DELETE FROM tower_image_cache_fills WHERE image_id = {} AND heartbeat < {}",
        sql.param(1),
        sql.time_param(2)
    )
}

/// The node claiming an image: `(image id)`.
fn claimant(sql: Dialect) -> String {
    format!(
        "SELECT node_reference_url FROM tower_image_cache_fills WHERE image_id = {}",
        sql.param(1)
    )
}

/// The node claiming an image with a heartbeat after a time: `(image id, heartbeat after)`.
fn fresh_claimant(sql: Dialect) -> String {
    format!(
        "SELECT node_reference_url FROM tower_image_cache_fills \
         WHERE image_id = {} AND heartbeat >= {}",
        sql.param(1),
        sql.time_param(2)
    )
}

/// A claim's heartbeat: `(heartbeat, image id, node url)`.
fn renew_claim(sql: Dialect) -> String {
    format!(
        "UPDATE tower_image_cache_fills SET heartbeat = {} \
         WHERE image_id = {} AND node_reference_url = {}",
        sql.time_param(1),
        sql.param(2),
        sql.param(3)
    )
}

/// A node's claim ended: `(image id, node url)`.
fn release_claim(sql: Dialect) -> String {
    format!(
        "DELETE FROM tower_image_cache_fills WHERE image_id = {} AND node_reference_url = {}",
        sql.param(1),
        sql.param(2)
    )
}

impl CentralDb {
    /// Claims the fill of `id` for the node at `url` (at epoch second `now`), unless another
    /// node's claim has a heartbeat after `stale_before`: answers the claimant's URL.
    pub(crate) async fn claim_fill(
        &self,
        id: &ImageId,
        url: &str,
        now: f64,
        stale_before: f64,
    ) -> DbResult<String> {
        let doing = "to claim an image's fill";
        let (pool, sql) = (self.pool(), self.dialect());
        sqlx::query(&expire_claim(sql))
            .bind(id.as_str())
            .bind(time_text(stale_before))
            .execute(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        sqlx::query(&insert_claim(sql))
            .bind(id.as_str())
            .bind(url)
            .bind(time_text(now))
            .execute(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        let row = sqlx::query(&claimant(sql))
            .bind(id.as_str())
            .fetch_one(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        sqlx::Row::try_get(&row, 0).map_err(|err| self.failed(doing, err))
    }

    /// The node whose claim of `id` has a heartbeat after `fresh_after` (epoch seconds).
    pub(crate) async fn claimant_of(
        &self,
        id: &ImageId,
        fresh_after: f64,
    ) -> DbResult<Option<String>> {
        let row = sqlx::query(&fresh_claimant(self.dialect()))
            .bind(id.as_str())
            .bind(time_text(fresh_after))
            .fetch_optional(self.pool())
            .await
            .map_err(|err| self.failed("to read an image's fill claim", err))?;
        row.map(|row| sqlx::Row::try_get(&row, 0))
            .transpose()
            .map_err(|err| self.failed("to read an image's fill claim", err))
    }

    /// Renews the node at `url`'s claim of `id` (at epoch second `now`).
    pub(crate) async fn renew_fill(&self, id: &ImageId, url: &str, now: f64) -> DbResult<()> {
        sqlx::query(&renew_claim(self.dialect()))
            .bind(time_text(now))
            .bind(id.as_str())
            .bind(url)
            .execute(self.pool())
            .await
            .map_err(|err| self.failed("to renew an image's fill claim", err))
            .map(drop)
    }

    /// Ends the node at `url`'s claim of `id`.
    pub(crate) async fn release_fill(&self, id: &ImageId, url: &str) -> DbResult<()> {
        sqlx::query(&release_claim(self.dialect()))
            .bind(id.as_str())
            .bind(url)
            .execute(self.pool())
            .await
            .map_err(|err| self.failed("to end an image's fill claim", err))
            .map(drop)
    }
}
