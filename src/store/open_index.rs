//! Opening the index `image_cache_driver` names, and the link to the fleet a `centralized_db`
//! node keeps ([`FleetLink`]).

use super::driver::IndexDriver;
use super::error::StoreError;
use super::layout::Layout;
use super::sled_driver::SledIndex;
use crate::config::IndexDriverKind;
use crate::CacheConfig;
#[cfg(not(feature = "centralized-db"))]
use crate::ImageId;

/// A `centralized_db` node's link to its fleet: the replicator writing its rows.
#[cfg(feature = "centralized-db")]
pub(crate) type FleetLink = std::sync::Arc<super::replicator::Replicator>;

/// Without the `centralized-db` feature no node has a fleet.
#[cfg(not(feature = "centralized-db"))]
#[derive(Debug)]
pub(crate) enum FleetLink {}

#[cfg(not(feature = "centralized-db"))]
impl FleetLink {
    pub(crate) fn take_evictions(&self) -> Vec<ImageId> {
        match *self {}
    }

    pub(crate) fn announce_deleted(&self, _id: &ImageId) {
        match *self {}
    }
}

/// The index a cache opens with, and its fleet when it has one.
pub(crate) struct OpenedIndex {
    pub(crate) driver: Box<dyn IndexDriver>,
    pub(crate) fleet: Option<FleetLink>,
}

/// Opens the index `config.image_cache_driver` names.
pub(crate) fn open_index(config: &CacheConfig, layout: &Layout) -> Result<OpenedIndex, StoreError> {
    if let Some(problem) = config.problem() {
        return Err(StoreError::InvalidConfig(problem.to_owned()));
    }
    let path = super::glance_import::index_path(config);
    let local = SledIndex::open_or_rebuild(&path, config.db_cache_capacity, &layout.invalid)?;
    // A directory Glance's own cache filled: its records and queue, once.
    if super::glance_import::import_once(&local, config, &layout.base.join("queue"))? {
        // The reconciliation that follows reads the records written there.
        local.reload();
    }
    match config.image_cache_driver {
        IndexDriverKind::Sled => Ok(OpenedIndex {
            driver: Box::new(local),
            fleet: None,
        }),
        IndexDriverKind::Centralized => open_central(config, Box::new(local)),
    }
}

#[cfg(feature = "centralized-db")]
/// `local` (any driver) mirrored into the central database.
fn open_central(
    config: &CacheConfig,
    local: Box<dyn IndexDriver>,
) -> Result<OpenedIndex, StoreError> {
    use super::central_driver::CentralIndex;
    use super::replicator::Replicator;
    use std::sync::Arc;

    let (Some(url), Some(node_url)) = (
        &config.database_connection,
        &config.worker_self_reference_url,
    ) else {
        let problem = "image_cache_driver = centralized_db needs [database] connection and \
                       worker_self_reference_url";
        return Err(StoreError::InvalidConfig(problem.to_owned()));
    };
    let local: Arc<dyn IndexDriver> = Arc::from(local);
    let replicator = Arc::new(
        Replicator::start(url, node_url, local.clone())
            .map_err(|err| StoreError::InvalidConfig(err.to_string()))?,
    );
    Ok(OpenedIndex {
        driver: Box::new(CentralIndex::new(local, replicator.clone())),
        fleet: Some(replicator),
    })
}

#[cfg(not(feature = "centralized-db"))]
fn open_central(
    _config: &CacheConfig,
    _local: Box<dyn IndexDriver>,
) -> Result<OpenedIndex, StoreError> {
    Err(StoreError::InvalidConfig(
        "image_cache_driver = centralized_db needs this crate built with its centralized-db \
         feature"
            .to_owned(),
    ))
}
