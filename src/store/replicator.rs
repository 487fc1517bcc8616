//! The [`Replicator`]: writes one node's records to the central database behind the node's back,
//! and brings the news of images deleted elsewhere.
//!
//! The node's embedded index stays the truth for its attributes; the replicator mirrors it into
//! Glance's `cached_images` rows of this node, on a runtime of its own, so neither the hit path
//! nor a commit ever waits on the network:
//! - changes (commits, hit counters, deletes, prunes) are gathered by image and written about
//!   twice a second, a few statements per round whatever the request rate;
//! - on (re)connecting, the rows are *converged*: rows of images the node no longer holds are
//!   removed, missing or stale rows are written from the local records (hits and times kept).
//!   This is also how a node moving from `sled` to `centralized_db` brings its entries along;
//! - a failure of any kind (down at start, a dropped connection, a deadlock) is logged once, then
//!   retried with backoff up to 30 s, and the next success converges. Only rows of this node's
//!   `node_reference_id` are ever written or removed;
//! - each second it reads the evictions other nodes announced (images deleted through them),
//!   which the cache's background thread applies ([`Replicator::take_evictions`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::central_db::CentralDb;
use super::central_error::CentralError;
use super::central_sql::{fits_the_tables, too_long};
use super::clock::now;
use super::converge::converge;
use super::driver::{IndexDriver, IndexRecord};
use crate::config::DatabaseUrl;
use crate::sync::lock;
use crate::ImageId;

/// How often gathered changes are written.
const WRITE_EVERY: Duration = Duration::from_millis(500);
/// How often other nodes' evictions are read.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long evictions are kept in the table.
const EVICTIONS_KEPT: f64 = 86_400.0;
/// How long a stopping node waits for its last write.
const LAST_WRITE_WAIT: Duration = Duration::from_secs(3);
/// Where the last eviction read is kept in the local index.
pub(crate) const EVICTION_SEEN_KEY: &str = "central-eviction-seen";

/// Mirrors one node's records into the central database (see the module docs).
#[derive(Debug)]
pub(crate) struct Replicator {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

#[derive(Debug)]
struct Shared {
    node_url: String,
    db: CentralDb,
    local: Arc<dyn IndexDriver>,
    pending: Mutex<Pending>,
    wake: Notify,
    stop: AtomicBool,
    /// Images other nodes announced deleted, for the cache to evict.
    news: Mutex<Vec<ImageId>>,
    /// Whether the database answered the last round.
    reachable: AtomicBool,
    /// Rounds that failed since the start.
    failed_rounds: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    /// The latest state of each changed image: its record, or `None` when it left.
    changes: HashMap<ImageId, Option<IndexRecord>>,
    /// Deleted images to announce, with the time.
    announcements: Vec<(ImageId, f64)>,
    /// Since when something gathered waits to be written (the replication lag).
    since: Option<Instant>,
}

/// What the loop knows between rounds.
struct Session {
    node: Option<i64>,
    converged: bool,
    seen_eviction: Option<i64>,
    last_poll: Option<Instant>,
    last_expiry: Option<Instant>,
}

impl Replicator {
    /// Starts mirroring `local` as the node at `node_url` into the database at `url`. Never
    /// waits on the database: an unreachable one is retried in the background.
    pub(crate) fn start(
        url: &DatabaseUrl,
        node_url: &str,
        local: Arc<dyn IndexDriver>,
    ) -> Result<Replicator, CentralError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("image-cache-central")
            .enable_all()
            .build()
            .map_err(CentralError::Thread)?;
        // One connection per node: a fleet of 50 nodes holds 50 of the server's connections
        // (PostgreSQL allows 100 by default). Fleet queries wait behind a round, for
        // milliseconds.
        let db = {
            let _entered = runtime.enter();
            CentralDb::lazy(url, 1)?
        };
        let shared = Arc::new(Shared {
            node_url: node_url.to_owned(),
            db,
            local,
            pending: Mutex::default(),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            news: Mutex::default(),
            reachable: AtomicBool::new(false),
            failed_rounds: AtomicU64::new(0),
        });
        let (done, finished) = std::sync::mpsc::channel();
        let looping = shared.clone();
        runtime.spawn(async move {
            looping.run().await;
            let _ = done.send(());
        });
        Ok(Replicator {
            shared,
            runtime: Mutex::new(Some(runtime)),
            finished: Mutex::new(Some(finished)),
        })
    }

    /// Notes a change of one image's record (`None`: it left the cache).
    pub(crate) fn changed(&self, id: &ImageId, record: Option<IndexRecord>) {
        if !fits_the_tables(id) {
            return too_long(id);
        }
        let mut pending = lock(&self.shared.pending);
        pending.changes.insert(id.clone(), record);
        pending.since.get_or_insert_with(Instant::now);
    }

    /// How long the oldest change not yet in the central database has waited (zero: none).
    pub(crate) fn lag(&self) -> Duration {
        lock(&self.shared.pending)
            .since
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Asks for the gathered changes to be written now.
    pub(crate) fn nudge(&self) {
        self.shared.wake.notify_one();
    }

    /// Announces to the fleet that `id` was deleted (the other nodes evict it).
    pub(crate) fn announce_deleted(&self, id: &ImageId) {
        if !fits_the_tables(id) {
            return too_long(id);
        }
        let mut pending = lock(&self.shared.pending);
        pending.announcements.push((id.clone(), now()));
        pending.since.get_or_insert_with(Instant::now);
        drop(pending);
        self.nudge();
    }

    /// The images other nodes announced deleted since the last call.
    pub(crate) fn take_evictions(&self) -> Vec<ImageId> {
        std::mem::take(&mut *lock(&self.shared.news))
    }

    /// The database, its pool and this node's URL, for fleet queries.
    pub(crate) fn db(&self) -> &CentralDb {
        &self.shared.db
    }

    /// This node's URL (`worker_self_reference_url`).
    pub(crate) fn node_url(&self) -> &str {
        &self.shared.node_url
    }

    /// Whether the database answered the last round.
    pub(crate) fn is_reachable(&self) -> bool {
        self.shared.reachable.load(Ordering::Relaxed)
    }

    /// How many rounds failed since the start (each is retried with backoff).
    pub(crate) fn failed_rounds(&self) -> u64 {
        self.shared.failed_rounds.load(Ordering::Relaxed)
    }

    /// A handle on the runtime the database calls run on.
    pub(crate) fn handle(&self) -> Option<tokio::runtime::Handle> {
        lock(&self.runtime).as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        // A last round writes what is gathered, when the database answers; while it is down
        // there is nothing to wait for (the next start converges).
        if let Some(finished) = lock(&self.finished).take().filter(|_| self.is_reachable()) {
            let _ = finished.recv_timeout(LAST_WRITE_WAIT);
        }
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    async fn run(&self) {
        let mut session = Session {
            node: None,
            converged: false,
            seen_eviction: self
                .local
                .number(EVICTION_SEEN_KEY)
                .ok()
                .flatten()
                .and_then(|n| i64::try_from(n).ok()),
            last_poll: None,
            last_expiry: None,
        };
        let mut backoff = Duration::from_secs(1);
        let mut down = false;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping && down {
                break;
            }
            let started = Instant::now();
            match self.round(&mut session).await {
                Ok(()) => {
                    let mut pending = lock(&self.pending);
                    let written = pending.changes.is_empty() && pending.announcements.is_empty();
                    pending.since = (!written).then_some(started);
                    drop(pending);
                    if down {
                        tracing::info!(
                            database = %self.db.url(),
                            "the central database is reachable again; this node's rows are \
                             converged with its cache"
                        );
                    }
                    down = false;
                    backoff = Duration::from_secs(1);
                }
                Err(reason) => {
                    self.failed_rounds.fetch_add(1, Ordering::Relaxed);
                    session.node = None;
                    session.converged = false;
                    if !down {
                        tracing::error!(
                            %reason,
                            "the central cache database is unreachable; this node keeps serving \
                             and filling from its local index, and retries in the background \
                             (logged once per outage)"
                        );
                    } else {
                        tracing::debug!(%reason, "the central database is still unreachable");
                    }
                    down = true;
                }
            }
            self.reachable.store(!down, Ordering::Relaxed);
            if stopping {
                break;
            }
            let wait = if down {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            } else {
                WRITE_EVERY
            };
            tokio::select! {
                _ = self.wake.notified(), if !down => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.db.close().await;
    }

    /// One round: connect and converge when needed, write the changes, announce deletions,
    /// read other nodes' evictions.
    async fn round(&self, session: &mut Session) -> Result<(), CentralError> {
        let node = match session.node {
            Some(node) => node,
            None => {
                self.db.create_tables().await?;
                let node = self.db.register_node(&self.node_url).await?;
                session.node = Some(node);
                node
            }
        };
        // A failed write does not hold back the deletions others are waiting to hear of.
        let written = if !session.converged {
            self.converge(node).await.map(|()| session.converged = true)
        } else {
            self.write_changes(node).await
        };
        self.announce(node).await?;
        written?;
        if session
            .last_poll
            .is_none_or(|at| at.elapsed() >= POLL_EVERY)
        {
            self.read_evictions(node, session).await?;
            session.last_poll = Some(Instant::now());
        }
        if session
            .last_expiry
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(600))
        {
            self.db.expire_evictions(now() - EVICTIONS_KEPT).await?;
            session.last_expiry = Some(Instant::now());
        }
        Ok(())
    }

    async fn write_changes(&self, node: i64) -> Result<(), CentralError> {
        let changes = std::mem::take(&mut lock(&self.pending).changes);
        if changes.is_empty() {
            return Ok(());
        }
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for (id, record) in changes {
            match record {
                Some(record) => upserts.push((id, record)),
                None => removals.push(id),
            }
        }
        // A failure here leaves the round unconverged: the next success rewrites from the
        // local records, so nothing gathered is lost.
        self.db.upsert(node, &upserts).await?;
        self.db.delete_rows(node, &removals).await?;
        Ok(())
    }

    /// Makes this node's rows equal its local records.
    async fn converge(&self, node: i64) -> Result<(), CentralError> {
        // Taken before the local records are read: every change gathered so far is in them.
        lock(&self.pending).changes.clear();
        converge(&self.db, &*self.local, node, &self.node_url).await
    }

    async fn announce(&self, node: i64) -> Result<(), CentralError> {
        let announcements = std::mem::take(&mut lock(&self.pending).announcements);
        for (at, (id, time)) in announcements.iter().enumerate() {
            if let Err(err) = self.db.announce_eviction(node, id, *time).await {
                // Kept for the next round, in order.
                let mut pending = lock(&self.pending);
                let rest = announcements[at..].iter().cloned();
                let later = std::mem::take(&mut pending.announcements);
                pending.announcements = rest.chain(later).collect();
                return Err(err);
            }
        }
        Ok(())
    }

    async fn read_evictions(&self, node: i64, session: &mut Session) -> Result<(), CentralError> {
        let Some(seen) = session.seen_eviction else {
            session.seen_eviction = Some(self.db.last_eviction().await?);
            return self.keep_seen(session);
        };
        let evictions = self.db.evictions_after(seen, node).await?;
        let Some(&(last, _)) = evictions.last() else {
            return Ok(());
        };
        let ids = evictions
            .into_iter()
            .filter_map(|(_, id)| ImageId::new(&id).ok());
        lock(&self.news).extend(ids);
        session.seen_eviction = Some(last);
        self.keep_seen(session)
    }

    fn keep_seen(&self, session: &Session) -> Result<(), CentralError> {
        let seen = session.seen_eviction.and_then(|s| u64::try_from(s).ok());
        if let Some(seen) = seen {
            self.local.set_number(EVICTION_SEEN_KEY, seen)?;
        }
        Ok(())
    }
}
