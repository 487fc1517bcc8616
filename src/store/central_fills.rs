//! The fleet's fills in flight and its sites (two tables of this crate's own that Glance
//! ignores):
//!
//! - `tower_image_cache_fill_claims`: one row per image and scope being read, naming the node
//!   that reads it and its last heartbeat, so the other nodes follow that node instead of
//!   reading it too. The scope is `''` for the read of the backend (one for the whole fleet)
//!   or a zone's name for the one read into that zone (`[cache_server] peer_zone`).
//! - `tower_image_cache_node_zones`: each node's zone.
//!
//! `(image id, scope)` is the claims' key: of nodes claiming one image at once, one row is
//! written and every node reads back the same claimant. A claim whose heartbeat is older than
//! the staleness limit (its node died) is taken over.

use super::central_db::{CentralDb, DbResult};
use super::central_sql::{time_text, Dialect};
use crate::config::DatabaseKind;
use crate::ImageId;

/// The claims table of an earlier release, keyed by the image alone; its rows live seconds, so
/// it is dropped rather than migrated.
const EARLIER_CLAIMS: &str = "tower_image_cache_fills";

/// The tables, created when absent: `(table, statement)`.
pub(crate) fn create_tables(sql: Dialect) -> [(&'static str, String); 2] {
    let (time, tail) = match sql.kind {
        DatabaseKind::Postgres => ("TIMESTAMP WITHOUT TIME ZONE", ""),
        DatabaseKind::MySql => ("DATETIME(6)", " ENGINE=InnoDB DEFAULT CHARSET=utf8"),
        DatabaseKind::Sqlite => ("DATETIME", ""),
    };
    [
        (
            "tower_image_cache_fill_claims",
            format!(
                "CREATE TABLE IF NOT EXISTS tower_image_cache_fill_claims (\
                 image_id VARCHAR(36) NOT NULL, \
                 scope VARCHAR(64) NOT NULL, \
                 node_reference_url VARCHAR(255) NOT NULL, \
                 heartbeat {time} NOT NULL, \
                 PRIMARY KEY (image_id, scope)){tail}"
            ),
        ),
        (
            "tower_image_cache_node_zones",
            format!(
                "CREATE TABLE IF NOT EXISTS tower_image_cache_node_zones (\
                 node_reference_url VARCHAR(255) NOT NULL, \
                 zone VARCHAR(64) NOT NULL, \
                 PRIMARY KEY (node_reference_url)){tail}"
            ),
        ),
    ]
}

/// Drops the claims table of an earlier release.
pub(crate) fn drop_earlier_table() -> String {
    format!("DROP TABLE IF EXISTS {EARLIER_CLAIMS}")
}

/// Claims an image in a scope unless a row is there: `(image id, scope, node url, heartbeat)`.
fn insert_claim(sql: Dialect) -> String {
    let values = format!(
        "(image_id, scope, node_reference_url, heartbeat) VALUES ({}, {}, {}, {})",
        sql.param(1),
        sql.param(2),
        sql.param(3),
        sql.time_param(4)
    );
    let table = "tower_image_cache_fill_claims";
    match sql.kind {
        DatabaseKind::Postgres => {
            format!("INSERT INTO {table} {values} ON CONFLICT (image_id, scope) DO NOTHING")
        }
        DatabaseKind::MySql => format!("INSERT IGNORE INTO {table} {values}"),
        DatabaseKind::Sqlite => format!("INSERT OR IGNORE INTO {table} {values}"),
    }
}

/// The rows of one image and scope: `WHERE` with `(image id, scope)` as parameters 1 and 2,
/// then `extra` (whose parameters follow).
fn claim_rows(sql: Dialect, extra: &str) -> String {
    format!(
        "tower_image_cache_fill_claims WHERE image_id = {} AND scope = {}{extra}",
        sql.param(1),
        sql.param(2)
    )
}

/// Removes a claim made stale: `(image id, scope, heartbeat before)`.
fn expire_claim(sql: Dialect) -> String {
    let extra = format!(" AND heartbeat < {}", sql.time_param(3));
    format!("DELETE FROM {}", claim_rows(sql, &extra))
}

/// The node claiming an image in a scope: `(image id, scope)`.
fn claimant(sql: Dialect) -> String {
    format!("SELECT node_reference_url FROM {}", claim_rows(sql, ""))
}

/// The nodes claiming an image in any scope with a heartbeat after a time:
/// `(image id, heartbeat after)`.
fn fresh_claimants(sql: Dialect) -> String {
    format!(
        "SELECT DISTINCT node_reference_url FROM tower_image_cache_fill_claims \
         WHERE image_id = {} AND heartbeat >= {} ORDER BY node_reference_url",
        sql.param(1),
        sql.time_param(2)
    )
}

/// A claim's heartbeat: `(heartbeat, image id, scope, node url)`.
fn renew_claim(sql: Dialect) -> String {
    format!(
        "UPDATE tower_image_cache_fill_claims SET heartbeat = {} \
         WHERE image_id = {} AND scope = {} AND node_reference_url = {}",
        sql.time_param(1),
        sql.param(2),
        sql.param(3),
        sql.param(4)
    )
}

/// A node's claim ended: `(image id, scope, node url)`.
fn release_claim(sql: Dialect) -> String {
    let extra = format!(" AND node_reference_url = {}", sql.param(3));
    format!("DELETE FROM {}", claim_rows(sql, &extra))
}

impl CentralDb {
    /// Claims the fill of `id` in `scope` for the node at `url` (at epoch second `now`), unless
    /// another node's claim has a heartbeat after `stale_before`: answers the claimant's URL.
    pub(crate) async fn claim_fill(
        &self,
        (id, scope): (&ImageId, &str),
        url: &str,
        now: f64,
        stale_before: f64,
    ) -> DbResult<String> {
        let doing = "to claim an image's fill";
        let (pool, sql) = (self.pool(), self.dialect());
        sqlx::query(&expire_claim(sql))
            .bind(id.as_str())
            .bind(scope)
            .bind(time_text(stale_before))
            .execute(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        sqlx::query(&insert_claim(sql))
            .bind(id.as_str())
            .bind(scope)
            .bind(url)
            .bind(time_text(now))
            .execute(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        let row = sqlx::query(&claimant(sql))
            .bind(id.as_str())
            .bind(scope)
            .fetch_one(pool)
            .await
            .map_err(|err| self.failed(doing, err))?;
        sqlx::Row::try_get(&row, 0).map_err(|err| self.failed(doing, err))
    }

    /// The nodes whose claims of `id` (in any scope) have a heartbeat after `fresh_after`
    /// (epoch seconds), sorted.
    pub(crate) async fn claimants_of(
        &self,
        id: &ImageId,
        fresh_after: f64,
    ) -> DbResult<Vec<String>> {
        let doing = "to read an image's fill claims";
        let rows = sqlx::query(&fresh_claimants(self.dialect()))
            .bind(id.as_str())
            .bind(time_text(fresh_after))
            .fetch_all(self.pool())
            .await
            .map_err(|err| self.failed(doing, err))?;
        rows.iter()
            .map(|row| sqlx::Row::try_get(row, 0))
            .collect::<Result<_, _>>()
            .map_err(|err| self.failed(doing, err))
    }

    /// Renews the node at `url`'s claim of `id` in `scope` (at epoch second `now`).
    pub(crate) async fn renew_fill(
        &self,
        (id, scope): (&ImageId, &str),
        url: &str,
        now: f64,
    ) -> DbResult<()> {
        sqlx::query(&renew_claim(self.dialect()))
            .bind(time_text(now))
            .bind(id.as_str())
            .bind(scope)
            .bind(url)
            .execute(self.pool())
            .await
            .map_err(|err| self.failed("to renew an image's fill claim", err))
            .map(drop)
    }

    /// Ends the node at `url`'s claim of `id` in `scope`.
    pub(crate) async fn release_fill(
        &self,
        (id, scope): (&ImageId, &str),
        url: &str,
    ) -> DbResult<()> {
        sqlx::query(&release_claim(self.dialect()))
            .bind(id.as_str())
            .bind(scope)
            .bind(url)
            .execute(self.pool())
            .await
            .map_err(|err| self.failed("to end an image's fill claim", err))
            .map(drop)
    }

    /// Records the node at `url` in `zone`, or in none.
    pub(crate) async fn set_zone(&self, url: &str, zone: Option<&str>) -> DbResult<()> {
        let doing = "to record this node's zone";
        let sql = self.dialect();
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|err| self.failed(doing, err))?;
        let delete = format!(
            "DELETE FROM tower_image_cache_node_zones WHERE node_reference_url = {}",
            sql.param(1)
        );
        sqlx::query(&delete)
            .bind(url)
            .execute(&mut *tx)
            .await
            .map_err(|err| self.failed(doing, err))?;
        if let Some(zone) = zone {
            let insert = format!(
                "INSERT INTO tower_image_cache_node_zones (node_reference_url, zone) \
                 VALUES ({}, {})",
                sql.param(1),
                sql.param(2)
            );
            sqlx::query(&insert)
                .bind(url)
                .bind(zone)
                .execute(&mut *tx)
                .await
                .map_err(|err| self.failed(doing, err))?;
        }
        tx.commit().await.map_err(|err| self.failed(doing, err))
    }

    /// Every node with a zone: `(url, zone)`.
    pub(crate) async fn zones(&self) -> DbResult<Vec<(String, String)>> {
        let doing = "to read the nodes' zones";
        let rows = sqlx::query("SELECT node_reference_url, zone FROM tower_image_cache_node_zones")
            .fetch_all(self.pool())
            .await
            .map_err(|err| self.failed(doing, err))?;
        rows.iter()
            .map(|row| Ok((sqlx::Row::try_get(row, 0)?, sqlx::Row::try_get(row, 1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|err| self.failed(doing, err))
    }
}
