//! [`Fleet`]: the cache nodes sharing one central database (`image_cache_driver =
//! centralized_db`), seen from any of them or from a tool.

use std::fmt;

use super::cache::ImageCache;
use super::central_db::{CentralDb, CentralRow};
use super::central_error::CentralError;
use crate::config::DatabaseUrl;
use crate::ImageId;

/// The fleet of cache nodes whose records share one central database.
///
/// A node gets its own from [`ImageCache::fleet`]; a tool connects with [`Fleet::connect`].
/// Every query runs on the runtime the fleet was made on (a node's own database thread).
#[derive(Clone)]
pub struct Fleet {
    db: CentralDb,
    runtime: tokio::runtime::Handle,
    node_url: Option<String>,
}

/// A fleet query that failed: a sentence naming the database and what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetError(pub(super) String);

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FleetError {}

impl From<CentralError> for FleetError {
    fn from(err: CentralError) -> Self {
        FleetError(err.to_string())
    }
}

/// One image cached on one node of the fleet (a `cached_images` row).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct FleetImage {
    /// The node's `worker_self_reference_url`.
    pub node_url: String,
    /// The image's id.
    pub image_id: String,
    /// Its size in bytes.
    pub size: u64,
    /// Complete deliveries from this node's cache.
    pub hits: u64,
    /// Epoch seconds (whole seconds on MySQL/MariaDB).
    pub last_accessed: f64,
    /// Epoch seconds: when it was cached.
    pub last_modified: f64,
    /// Its MD5, as hex, when known.
    pub checksum: Option<String>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("database", self.db.url())
            .field("node_url", &self.node_url)
            .finish()
    }
}

impl Fleet {
    /// Connects to the fleet's database at `url` (connections are made when first needed).
    /// Must be called on a tokio runtime, which the queries then run on.
    pub fn connect(url: &DatabaseUrl) -> Result<Fleet, FleetError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| FleetError::from(CentralError::NoRuntime))?;
        let db = {
            let _entered = runtime.enter();
            CentralDb::lazy(url, 2)?
        };
        Ok(Fleet {
            db,
            runtime,
            node_url: None,
        })
    }

    /// The database, with any password hidden.
    pub fn database(&self) -> &DatabaseUrl {
        self.db.url()
    }

    /// The URL of the node this handle came from, if it came from one.
    pub fn this_node(&self) -> Option<&str> {
        self.node_url.as_deref()
    }

    pub(super) async fn run<T, F>(
        &self,
        query: impl FnOnce(CentralDb) -> F,
    ) -> Result<T, FleetError>
    where
        F: std::future::Future<Output = Result<T, CentralError>> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        // A node makes the tables it writes (Glance's migrations may never have run); a tool
        // only reads what is there.
        let make_tables = self.node_url.is_some();
        let answer = query(db.clone());
        let running = self.runtime.spawn(async move {
            if make_tables {
                db.ensure_tables().await?;
            }
            answer.await
        });
        match running.await {
            Ok(answer) => Ok(answer?),
            Err(err) => Err(CentralError::Stopped(err.to_string()).into()),
        }
    }

    /// Every node's URL (rows of `node_reference`), sorted.
    pub async fn nodes(&self) -> Result<Vec<String>, FleetError> {
        self.run(|db| async move { db.node_urls().await }).await
    }

    /// The URLs of the nodes holding `id`, sorted (`GET /v2/cache/nodes/{id}`).
    pub async fn nodes_caching(&self, id: &ImageId) -> Result<Vec<String>, FleetError> {
        let id = id.clone();
        self.run(|db| async move { db.nodes_of_image(&id).await })
            .await
    }

    pub(super) fn claimant(&self) -> Result<String, FleetError> {
        self.node_url.clone().ok_or_else(|| {
            FleetError(format!(
                "only a node of the fleet on {} can claim a fill; a tool cannot",
                self.db.url()
            ))
        })
    }

    /// Every image cached on every node, by node URL then image id.
    pub async fn cached_images(&self) -> Result<Vec<FleetImage>, FleetError> {
        let rows = self.run(|db| async move { db.all_rows().await }).await?;
        Ok(rows
            .into_iter()
            .map(|(node_url, row)| FleetImage::new(node_url, row))
            .collect())
    }

    /// Forgets a decommissioned node: its `cached_images` rows and its `node_reference` row
    /// (Glance keeps them forever). Returns how many image rows went, or `None` when no node has
    /// that URL. A node still running writes its rows again.
    pub async fn forget_node(&self, node_url: &str) -> Result<Option<u64>, FleetError> {
        let url = node_url.to_owned();
        self.run(|db| async move { db.forget_node(&url).await })
            .await
    }
}

impl FleetImage {
    fn new(node_url: String, row: CentralRow) -> Self {
        FleetImage {
            node_url,
            image_id: row.image_id,
            size: row.size,
            hits: row.hits,
            last_accessed: row.last_accessed,
            last_modified: row.last_modified,
            checksum: row.checksum,
        }
    }
}

impl ImageCache {
    /// The fleet this node belongs to, when its driver is `centralized_db`. Its queries create
    /// Glance's cache tables when they are missing, as the node itself does; a tool's
    /// [`Fleet::connect`] only reads.
    pub fn fleet(&self) -> Option<Fleet> {
        let link = self.inner.fleet.as_ref()?;
        Some(Fleet {
            db: link.db().clone(),
            runtime: link.handle()?,
            node_url: Some(link.node_url().to_owned()),
        })
    }

    /// Whether this node's last write to its fleet's database succeeded (`None`: no fleet).
    pub fn fleet_reachable(&self) -> Option<bool> {
        self.inner.fleet.as_ref().map(|link| link.is_reachable())
    }
}
