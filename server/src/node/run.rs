//! Running the cache server: the caching proxy and the management routes around the upstream,
//! `/healthz`, and a graceful stop on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use clap::Parser;

use super::listen::ClientLimits;
use super::options::{ServerArgs, ServerSettings};
use super::peer_setup::fleet_peers;
use super::peers::Answer;
use super::upstream::Upstream;
use tower_image_cache::keystone::Keystone;
use tower_image_cache::manage::{CacheManageLayer, KeystoneAccess, StaticToken};
use tower_image_cache::{CacheLayer, ImageCache, InnerMetadata};

/// How long the fills cut short at shutdown get to roll back.
const ROLLBACK_WAIT: Duration = Duration::from_secs(30);

/// The whole of `image-cache-server`'s `main`.
pub fn main() -> ExitCode {
    let args = ServerArgs::parse();
    let logging = args.files().and_then(|files| {
        let options =
            tower_image_cache::config::LogOptions::from_files(files).map_err(|e| e.to_string())?;
        super::logging::init(&options)
    });
    if let Err(reason) = logging {
        eprintln!("image-cache-server: {reason}");
        return ExitCode::FAILURE;
    }
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(reason) => {
            eprintln!("image-cache-server: {reason}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("image-cache-server: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(serve(settings));
    // Whatever still runs (downloads past the grace period, their fills) stops here: the fills
    // roll back on the blocking threads this waits for.
    runtime.shutdown_timeout(ROLLBACK_WAIT);
    match served {
        Ok(cache) => {
            if let Err(err) = cache.flush_hits() {
                eprintln!("image-cache-server: could not write the last hit counters: {err}");
            }
            drop(cache);
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("image-cache-server: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGTERM or SIGINT, then stops accepting and gives requests in flight the grace
/// period; returns the cache, for the caller to close once the runtime has stopped.
async fn serve(settings: ServerSettings) -> Result<ImageCache, String> {
    super::logging::reopen_on_sighup();
    let dir = settings.cache.image_cache_dir.clone();
    let config = settings.cache.clone();
    let cache = tokio::task::spawn_blocking(move || ImageCache::open(config))
        .await
        .map_err(|err| format!("opening the cache did not finish: {err}"))?
        .map_err(|err| format!("cannot open the cache at {}: {err}", dir.display()))?;

    let upstream = Upstream::new(
        settings.upstream.clone(),
        settings.upstream_keepalive,
        &settings.upstream_tls,
        settings.upstream_timeouts,
    )?
    .count_into(&cache);
    let keystone = settings
        .keystone
        .clone()
        .map(Keystone::new)
        .transpose()
        .map_err(|err| err.to_string())?;
    let (peers, admission) = fleet_peers(&settings, &cache, keystone.as_ref())?;
    let proxy = tower::service_fn(move |request: Request<Body>| {
        let (upstream, peers) = (upstream.clone(), peers.clone());
        async move {
            let Some(asking) = peers.as_ref().map(|peers| peers.answer(&request)) else {
                return upstream.forward(request).await;
            };
            match asking.await {
                Answer::Peer(response) => Ok(response),
                Answer::Upstream(claims) => Ok(claims.ride(upstream.forward(request).await?)),
            }
        }
    });
    let manage = match (&settings.manage_token, &keystone) {
        (Some(token), _) => CacheManageLayer::new(cache.clone(), StaticToken::new(token)),
        (None, Some(keystone)) => {
            tracing::info!(roles = ?settings.manage_roles, "management callers' tokens are checked with Keystone");
            let access = KeystoneAccess::new(keystone.clone()).roles(settings.manage_roles.clone());
            CacheManageLayer::new(cache.clone(), access)
        }
        // Without a manage token or Keystone, nobody may manage this node's cache.
        (None, None) => CacheManageLayer::new(cache.clone(), StaticToken::new("")),
    };
    let manage = match (&settings.service_token, keystone) {
        (Some(token), _) => manage.service_token(token),
        (None, Some(keystone)) => manage.service_keystone(keystone),
        (None, None) => manage,
    };
    // The upstream client answers 504 itself past upstream_response_timeout.
    let manage = manage.upstream_response_timeout(None);
    let service = tower::ServiceBuilder::new()
        .layer(manage)
        .layer(
            // The upstream client keeps the response and idle limits (for every request it
            // forwards, answering 504 itself); the layer resumes cut fills and bounds them.
            CacheLayer::new(cache.clone(), InnerMetadata::new())
                .upstream_response_timeout(None)
                .upstream_idle_timeout(None)
                .upstream_resume_attempts(settings.upstream_resume_attempts)
                .max_concurrent_fills(settings.max_concurrent_fills)
                .authorization_cache_time(settings.authorization_cache_time)
                .authorization_stale_if_error(settings.authorization_stale_if_error),
        )
        .service(proxy);
    // What the previous run left queued is fetched now, not with the first request.
    service.start_prefetcher::<Body, _>();
    let health = Health::new(&cache);
    let mut app = observability(&health);
    if let Some(admission) = admission {
        app = app.merge(super::peer_route::route(&cache, admission));
    }
    let warming = super::warming::Warming::new(&cache)?;
    let app = app
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(
            warming,
            super::warming::queue_on_nodes,
        ))
        .layer(axum::middleware::map_response(request_id));

    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", settings.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    let acceptor = match &settings.tls {
        Some((cert, key)) => Some(super::tls::acceptor(cert, key)?),
        None => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{addr}");
    if let Some(bind) = settings.metrics_bind {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|err| format!("cannot listen on {bind} for metrics: {err}"))?;
        let addr = listener
            .local_addr()
            .map_err(|err| format!("cannot read the metrics address: {err}"))?;
        println!("metrics on http://{addr}");
        let routes = observability(&health);
        // Ends with the runtime, after the main listener has stopped.
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, routes).await {
                tracing::error!(%err, "the metrics listener failed");
            }
        });
    }
    tracing::info!(%addr, upstream = %settings.upstream, cache = %settings.cache.image_cache_dir.display(), "serving");
    // The index is reconciled (ImageCache::open) and the listeners are bound.
    super::notify::ready();

    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let signal = stop_signal().await;
        tracing::info!(
            signal,
            "stopping: no new connections; requests in flight may finish"
        );
        super::notify::stopping();
        let _ = stopping.send(());
    };
    let limits = ClientLimits {
        max_connections: connection_limit(settings.max_connections),
        client_timeout: settings.client_timeout,
    };
    let trusted = settings.trusted_proxies.clone();
    let cache_for_log = cache.clone();
    let server = async move {
        super::listen::serve(
            listener,
            acceptor,
            app,
            cache_for_log,
            trusted,
            limits,
            stop,
        )
        .await;
        Ok::<(), std::io::Error>(())
    };
    let grace = settings.shutdown_grace;
    tokio::select! {
        served = server => served.map_err(|err| format!("the server failed: {err}"))?,
        () = async move {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "requests still in flight after the grace period are stopped; their fills roll back"
        ),
    }
    Ok(cache)
}

/// File descriptors kept beside the client connections: the index, image files being read and
/// written, the listeners, the database pool.
const RESERVED_FDS: u64 = 256;

/// `max_connections`, within what the open-files limit allows. The soft limit is raised to the
/// hard one first (as nginx's `worker_rlimit_nofile` would be set): every client connection
/// may hold an upstream connection and an open image besides its own socket.
fn connection_limit(configured: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            if let Err(err) = setrlimit(Resource::Nofile, limit) {
                tracing::debug!(%err, "could not raise the open-files limit");
            }
        }
    }
    let files = getrlimit(Resource::Nofile).current;
    let Some(files) = files else {
        return configured;
    };
    let allowed = usize::try_from(files.saturating_sub(RESERVED_FDS) / 3)
        .unwrap_or(usize::MAX)
        .max(1);
    if allowed < configured {
        tracing::warn!(
            max_connections = configured,
            open_files_limit = files,
            serving = allowed,
            "max_connections is more than the open-files limit allows (three descriptors a \
             connection); raise LimitNOFILE (systemd) or ulimit -n to serve more"
        );
        return allowed;
    }
    configured
}

/// Gives each answer an `x-openstack-request-id`, as every OpenStack service's has: the
/// upstream's when it answered, a new one when the node answered itself.
async fn request_id(mut response: axum::response::Response) -> axum::response::Response {
    let name = http::HeaderName::from_static("x-openstack-request-id");
    if !response.headers().contains_key(&name) {
        let id = format!("req-{}", uuid::Uuid::new_v4());
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `/healthz` and `/metrics`, for the main listener and the metrics one.
fn observability(health: &Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(health.clone())
}

/// How long one probe of the disk and the index answers `/healthz`: unauthenticated callers
/// (every load balancer, or anyone) must not make the node write and fsync at their rate.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// When a health probe ran, and what it found.
type Probe = (tokio::time::Instant, Result<(), String>);

/// The cache and its last health probe, shared by every `/healthz` caller.
#[derive(Clone)]
struct Health {
    cache: ImageCache,
    /// The last probe; callers arriving during a probe wait for it.
    last: std::sync::Arc<tokio::sync::Mutex<Option<Probe>>>,
}

impl Health {
    fn new(cache: &ImageCache) -> Self {
        Health {
            cache: cache.clone(),
            last: Default::default(),
        }
    }

    /// The latest probe's verdict, probing again when it is older than the interval.
    async fn verdict(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = &*last {
            if at.elapsed() < HEALTH_PROBE_INTERVAL {
                return verdict.clone();
            }
        }
        let verdict = match self.cache.blocking(|c| c.check_health()).await {
            Ok(()) => Ok(()),
            Err(err) => Err(err.to_string()),
        };
        *last = Some((tokio::time::Instant::now(), verdict.clone()));
        verdict
    }
}

/// Resolves with the signal's name on SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
async fn stop_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot watch for SIGTERM; stop the server with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// `GET /metrics`: the cache's counters and gauges in the Prometheus text format.
async fn metrics(State(health): State<Health>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match health.cache.blocking(|c| c.render_metrics()).await {
        Ok(text) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    }
}

/// `GET /healthz`: 200 when the cache can write its files and its index, 503 with the reason
/// otherwise (for load balancers). The disk is probed at most once per
/// [`HEALTH_PROBE_INTERVAL`].
async fn healthz(State(health): State<Health>) -> (StatusCode, String) {
    match health.verdict().await {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
    }
}
