//! The prefetcher: fetches queued images into the cache through the wrapped service.
//!
//! It runs as one task per [`CacheManageService`](crate::manage::CacheManageService), from its
//! first request (or [`start_prefetcher`](crate::manage::CacheManageService::start_prefetcher)):
//! over the queue at once (what a previous process left queued is resumed), then woken by
//! `PUT /v2/cache/{id}` (or `POST /v2/cache/prefetch`), and every `cache_prefetcher_interval`
//! anyway. Each queued image is downloaded with the service
//! identity through the wrapped service — through `CacheLayer`, so the bytes take the normal
//! fill path with its verification. A fetch that fails leaves the image queued for the next
//! run; a failure or panic in one fetch never stops the worker.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::identity::{Identity, IdentityError};
use crate::body::{BoxError, ResponseBody};
use crate::route::RouteTemplate;
use crate::store::ImageCache;
use crate::ImageId;

/// Controls a running prefetcher: wake it, or stop it.
#[derive(Debug, Clone, Default)]
pub struct PrefetchHandle {
    wake: Arc<Notify>,
    shutdown: CancellationToken,
}

impl PrefetchHandle {
    /// Runs the queue now (or right after the run in progress).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the prefetcher; fetches in flight are dropped (their fills roll back).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A handle on one prefetcher: shut down with its parent, or alone.
    pub(crate) fn child(&self) -> PrefetchHandle {
        PrefetchHandle {
            wake: Arc::clone(&self.wake),
            shutdown: self.shutdown.child_token(),
        }
    }

    /// Whether the prefetcher was stopped.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// How the prefetcher and the optional maintenance timers run.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) identity: Identity,
    pub(crate) download: RouteTemplate,
    /// The image's metadata route, asked with `identity` about images a caller got a 404 for.
    pub(crate) metadata: RouteTemplate,
    pub(crate) concurrency: usize,
    pub(crate) interval: Duration,
    pub(crate) prune_every: Option<Duration>,
    pub(crate) clean_every: Option<Duration>,
    /// How long a prefetch waits for the image API's response head.
    pub(crate) response_timeout: Option<Duration>,
}

/// The image API as the prefetcher's tasks call it: a clone of it moves into each task.
pub(crate) trait ImageApi<ReqBody, ResBody>:
    Service<
        Request<ReqBody>,
        Response = Response<ResBody>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, ReqBody, ResBody> ImageApi<ReqBody, ResBody> for S where
    S: Service<
            Request<ReqBody>,
            Response = Response<ResBody>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static
{
}

/// Runs the prefetcher (and the prune/clean timers) until `handle` is shut down.
pub(crate) async fn run<S, ReqBody, ResBody>(
    cache: ImageCache,
    service: S,
    settings: WorkerSettings,
    handle: PrefetchHandle,
) where
    S: ImageApi<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: ResponseBody,
{
    let every = |first: Instant, period: Duration| {
        let mut timer = interval_at(first, period);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        timer
    };
    let now = Instant::now();
    // The first run is at once: a queue left by the previous process is resumed at start.
    let mut prefetch = every(now, settings.interval);
    let mut prune = settings
        .prune_every
        .map(|period| every(now + period, period));
    let mut clean = settings
        .clean_every
        .map(|period| every(now + period, period));
    loop {
        tokio::select! {
            _ = handle.shutdown.cancelled() => break,
            _ = handle.wake.notified() => run_queue(&cache, service.clone(), &settings, &handle).await,
            _ = cache.image_queued() => run_queue(&cache, service.clone(), &settings, &handle).await,
            _ = prefetch.tick() => run_queue(&cache, service.clone(), &settings, &handle).await,
            _ = cache.suspects_reported() => check_suspects(&cache, service.clone(), &settings).await,
            _ = tick(&mut prune) => maintain(&cache, "prune", ImageCache::prune).await,
            _ = tick(&mut clean) => maintain(&cache, "clean", ImageCache::clean).await,
        }
    }
    tracing::debug!("the prefetcher stopped");
}

async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn maintain<T: std::fmt::Debug + Send + 'static, E: std::fmt::Display + Send + 'static>(
    cache: &ImageCache,
    chore: &'static str,
    work: fn(&ImageCache) -> Result<T, E>,
) {
    match cache.blocking(work).await {
        Ok(done) => tracing::info!(chore, ?done, "scheduled cache maintenance ran"),
        Err(err) => tracing::warn!(chore, %err, "scheduled cache maintenance failed"),
    }
}

/// Fetches every queued image, at most `concurrency` at a time.
async fn run_queue<S, ReqBody, ResBody>(
    cache: &ImageCache,
    service: S,
    settings: &WorkerSettings,
    handle: &PrefetchHandle,
) where
    S: ImageApi<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: ResponseBody,
{
    let queued = match cache.blocking(ImageCache::queued_images).await {
        Ok(queued) => queued,
        Err(err) => return tracing::warn!(%err, "could not read the prefetch queue"),
    };
    let mut running: JoinSet<()> = JoinSet::new();
    for id in queued {
        while running.len() >= settings.concurrency.max(1) {
            log_panic(running.join_next().await);
        }
        if handle.is_shut_down() {
            return;
        }
        let fetch = fetch_one(cache.clone(), service.clone(), settings.clone(), id);
        running.spawn(fetch);
    }
    while let Some(done) = running.join_next().await {
        log_panic(Some(done));
    }
}

/// Asks the image API, with the service identity, about each cached image a caller got a 404
/// for; evicts those it does not know (deleted while this node was not told).
async fn check_suspects<S, ReqBody, ResBody>(
    cache: &ImageCache,
    service: S,
    settings: &WorkerSettings,
) where
    S: ImageApi<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: ResponseBody,
{
    for id in cache.take_suspects() {
        let build = || settings.metadata.get_request(&id);
        let status = match settings.identity.send(service.clone(), build).await {
            Ok(Ok(response)) => response.status(),
            Ok(Err(reason)) => {
                cache.metrics().keystone_failure("service_login");
                tracing::warn!(image = %id, %reason, "cannot ask the image API whether a cached image still exists");
                continue;
            }
            Err(err) => {
                tracing::warn!(image = %id, err = %err.into(), "cannot ask the image API whether a cached image still exists");
                continue;
            }
        };
        if status != StatusCode::NOT_FOUND {
            continue;
        }
        let evicting = id.clone();
        match cache.blocking(move |c| c.evict(&evicting)).await {
            Ok(_) => {
                tracing::info!(image = %id, "evicted: the image API no longer knows the image")
            }
            Err(err) => {
                tracing::warn!(image = %id, %err, "could not evict an image the image API no longer knows")
            }
        }
    }
}

fn log_panic(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(err)) = done {
        tracing::error!(%err, "a prefetch panicked; the image stays queued");
    }
}

async fn fetch_one<S, ReqBody, ResBody>(
    cache: ImageCache,
    service: S,
    settings: WorkerSettings,
    id: ImageId,
) where
    S: ImageApi<ReqBody, ResBody>,
    ReqBody: Default + Send + 'static,
    ResBody: ResponseBody,
{
    match fetch(&cache, service, &settings, &id).await {
        Ok(()) => {
            tracing::info!(image = %id, "prefetched into the cache");
            let dequeueing = id.clone();
            if let Err(err) = cache
                .blocking(move |c| c.delete_queued_image(&dequeueing))
                .await
            {
                tracing::warn!(image = %id, %err, "prefetched, but could not remove it from the queue");
            }
        }
        Err(reason) => {
            tracing::warn!(image = %id, %reason, "prefetch failed; the image stays queued")
        }
    }
}

/// Why a prefetch failed (the image stays queued, unless it can never fit).
#[derive(Debug)]
enum PrefetchError {
    TimedOut(Duration),
    ApiFailed(BoxError),
    Identity(IdentityError),
    Status(StatusCode),
    LargerThanTheCache { size: u64, max_size: u64 },
    Download(BoxError),
    NotCached,
}

impl std::fmt::Display for PrefetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefetchError::TimedOut(limit) => write!(
                f,
                "the image API did not answer within {} s (upstream_response_timeout)",
                limit.as_secs_f64()
            ),
            PrefetchError::ApiFailed(err) => write!(f, "the image API failed: {err}"),
            PrefetchError::Identity(err) => err.fmt(f),
            PrefetchError::Status(status) => write!(f, "the image API answered {status}"),
            PrefetchError::LargerThanTheCache { size, max_size } => write!(
                f,
                "the image ({size} bytes) is larger than the whole cache (image_cache_max_size = \
                 {max_size} bytes); removed from the queue"
            ),
            PrefetchError::Download(err) => write!(f, "the download failed: {err}"),
            PrefetchError::NotCached => f.write_str(
                "the download was not cached (a verification failure, or no CacheLayer inside \
                 the management layer; see the log)",
            ),
        }
    }
}

async fn fetch<S, ReqBody, ResBody>(
    cache: &ImageCache,
    service: S,
    settings: &WorkerSettings,
    id: &ImageId,
) -> Result<(), PrefetchError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    if cache.is_cached(id) {
        return Ok(());
    }
    let sent = settings
        .identity
        .send(service, || settings.download.get_request(id));
    let response = crate::layer::within(settings.response_timeout, sent)
        .await
        .ok_or_else(|| PrefetchError::TimedOut(settings.response_timeout.unwrap_or_default()))?
        .map_err(|err| PrefetchError::ApiFailed(err.into()))?
        .inspect_err(|_| cache.metrics().keystone_failure("service_login"))
        .map_err(PrefetchError::Identity)?;
    if response.status() != StatusCode::OK {
        return Err(PrefetchError::Status(response.status()));
    }
    let max_size = cache.config().image_cache_max_size;
    if let Some(size) =
        crate::image_meta::content_length(response.headers()).filter(|s| *s > max_size)
    {
        // It could never be cached: not read, and not kept queued to be read again and again.
        let dequeueing = id.clone();
        let _ = cache
            .blocking(move |c| c.delete_queued_image(&dequeueing))
            .await;
        return Err(PrefetchError::LargerThanTheCache { size, max_size });
    }
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) = body.frame().await {
        frame.map_err(|err| PrefetchError::Download(err.into()))?;
    }
    cache.fill_settled(id).await;
    if cache.is_cached(id) {
        Ok(())
    } else {
        Err(PrefetchError::NotCached)
    }
}
