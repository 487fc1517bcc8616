//! Converging one node's rows in the central database with its local records: what a node
//! does on (re)connecting, and how a node moved from `sled` brings its entries along.

use std::collections::HashMap;

use super::central_db::{CentralDb, CentralRow};
use super::central_error::CentralError;
use super::driver::{IndexDriver, IndexRecord};
use crate::ImageId;

/// Makes the rows of node `node` equal the records of `local`: rows of images it no longer
/// holds are removed, missing or stale ones written (hits and times kept). Only this node's
/// rows are read or written.
pub(crate) async fn converge(
    db: &CentralDb,
    local: &dyn IndexDriver,
    node: i64,
    node_url: &str,
) -> Result<(), CentralError> {
    let local: HashMap<ImageId, IndexRecord> = local
        .records()?
        .into_iter()
        .filter(|(id, _)| super::central_sql::fits_the_tables(id))
        .collect();
    let rows = db.rows_of_node(node).await?;
    let mut stale: Vec<ImageId> = Vec::new();
    let mut current = HashMap::with_capacity(rows.len());
    for row in rows {
        match ImageId::new(&row.image_id) {
            Ok(id) if local.contains_key(&id) => {
                current.insert(id, row);
            }
            Ok(id) => stale.push(id),
            // Not an id this cache can hold, so not one of its images.
            Err(_) => tracing::warn!(image = %row.image_id, "a row this node cannot hold"),
        }
    }
    let missing: Vec<(ImageId, IndexRecord)> = local
        .iter()
        .filter(|(id, record)| current.get(*id).is_none_or(|row| !row.matches(record)))
        .map(|(id, record)| (id.clone(), *record))
        .collect();
    db.upsert(node, &missing).await?;
    db.delete_rows(node, &stale).await?;
    if !missing.is_empty() || !stale.is_empty() {
        tracing::info!(
            written = missing.len(),
            removed = stale.len(),
            node = %node_url,
            "converged this node's rows in the central database with its cache"
        );
    }
    Ok(())
}

impl CentralRow {
    /// Whether this row already says what `record` says (times within a second: MySQL's
    /// `DATETIME` keeps no fraction, and MySQL rounds where MariaDB truncates).
    fn matches(&self, record: &IndexRecord) -> bool {
        self.size == record.size
            && self.hits == record.hits.min(i32::MAX as u64)
            && self.checksum == record.md5.map(hex::encode)
            && (self.last_accessed - record.last_accessed).abs() < 1.0
            && (self.last_modified - record.last_modified).abs() < 1.0
    }
}
