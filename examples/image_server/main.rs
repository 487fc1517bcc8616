//! A small image API in the shape of Glance v2, with the image cache in front of it.
//!
//! ```text
//! cargo run --release --example image_server -- --help
//! ```
//!
//! Images live under `DATA_DIR/images` (data and a JSON metadata file each), the cache under
//! `DATA_DIR/cache` (its `image_cache_dir`). Callers authenticate with `X-Auth-Token`: the admin
//! token (printed at start) and any `--user TOKEN=PROJECT:ROLE[,ROLE]`.

mod api;
mod data;
mod images;
mod store;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Router, ServiceExt as _};
use clap::Parser;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt as _;
use tower_image_cache::layer::AccessCheck;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata, TrustAll};

use images::{AppState, Caller, HashingAlgorithm};

#[derive(Parser, Debug)]
#[command(about = "A Glance-v2-style image API with tower-image-cache in front")]
struct Args {
    /// Listen address (port 0 picks one; the address is printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9292")]
    bind: SocketAddr,
    /// Images under DIR/images, the cache (image_cache_dir) under DIR/cache.
    #[arg(long, default_value = "./image-server-data")]
    data_dir: PathBuf,
    /// The admin token (role admin); generated and printed when not given.
    #[arg(long)]
    admin_token: Option<String>,
    /// A non-admin caller, TOKEN=PROJECT:ROLE[,ROLE]; repeatable.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, Caller)>,
    /// Throttle the image store's reads to RATE per second in all, e.g. `100MiB` (a remote
    /// store's link, shared by every download).
    #[arg(long, value_parser = parse_rate)]
    backend_rate: Option<u64>,
    /// A glance-style configuration file (`[DEFAULT] image_cache_dir = ...`,
    /// `image_cache_max_size = ...`; `image_cache_driver = centralized_db` with
    /// `worker_self_reference_url` and `[database] connection` to join a fleet, with the
    /// `centralized-db` feature); repeatable, later files win. Its image_cache_dir replaces
    /// DIR/cache.
    #[arg(long = "config-file", value_name = "FILE")]
    config_files: Vec<PathBuf>,
    /// Run without the cache (to compare against).
    #[arg(long)]
    no_cache: bool,
    /// The multihash recorded for uploads (`os_hash_algo`), as Glance's `hashing_algorithm`;
    /// `none` records only the MD5 `checksum`, as images uploaded before multihashes existed.
    #[arg(long, value_enum, default_value = "sha512")]
    hashing_algorithm: HashingAlgorithm,
    /// The hit path's access check.
    #[arg(long, value_enum, default_value = "metadata")]
    access_check: AccessChoice,
    /// Seconds a caller's allowed access check for one image is reused without asking again
    /// (default: every download is checked).
    #[arg(long, value_name = "SECONDS")]
    authorization_cache_time: Option<u64>,
    /// Seconds past --authorization-cache-time a remembered decision may still admit a hit
    /// while the image API fails (default: never).
    #[arg(long, value_name = "SECONDS")]
    authorization_stale_if_error: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum AccessChoice {
    /// Ask `GET /v2/images/{id}` with the caller's token before every hit.
    Metadata,
    /// Serve every hit without asking (only behind an authorizing proxy).
    Trust,
}

fn parse_user(spec: &str) -> Result<(String, Caller), String> {
    let (token, rest) = spec
        .split_once('=')
        .ok_or("expected TOKEN=PROJECT:ROLE[,ROLE]")?;
    let (project, roles) = rest
        .split_once(':')
        .ok_or("expected TOKEN=PROJECT:ROLE[,ROLE]")?;
    if token.is_empty() || project.is_empty() {
        return Err("the token and the project must not be empty".into());
    }
    let roles = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((
        token.to_owned(),
        Caller {
            project: project.to_owned(),
            roles,
        },
    ))
}

fn parse_rate(rate: &str) -> Result<u64, String> {
    let rate = rate.trim().trim_end_matches("/s");
    let split = rate
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rate.len());
    let (number, unit) = rate.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{rate:?} is not a rate like 100MiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = (number * scale) as u64;
    if bytes == 0 {
        return Err("the rate must be above zero".into());
    }
    Ok(bytes)
}

/// The image API with the cache in front: the management routes (for the admin token, which
/// is also the prefetcher's identity) outside the cache layer, around the whole API. The layers
/// are the outermost service, not a router's fallback: a hit is answered before any routing.
fn with_cache<A>(
    api: Router,
    cache: ImageCache,
    access: A,
    args: &Args,
    admin_token: &str,
) -> BoxCloneSyncService<Request<Body>, Response, Infallible>
where
    A: AccessCheck<Router, Body>,
{
    let seconds = |s: Option<u64>| s.map(std::time::Duration::from_secs);
    let layer = CacheLayer::new(cache.clone(), access)
        .authorization_cache_time(seconds(args.authorization_cache_time))
        .authorization_stale_if_error(seconds(args.authorization_stale_if_error));
    // The cache's Prometheus metrics, for a scraper (no token: keep the port private). The
    // layers pass the route through.
    let metrics = {
        let cache = cache.clone();
        move || {
            let cache = cache.clone();
            async move {
                match cache.blocking(|c| c.render_metrics()).await {
                    Ok(text) => (StatusCode::OK, text),
                    Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
                }
            }
        }
    };
    let api = api.route("/metrics", axum::routing::get(metrics));
    let service = tower::ServiceBuilder::new()
        .layer(
            CacheManageLayer::new(cache.clone(), StaticToken::new(admin_token))
                .service_token(admin_token),
        )
        .layer(layer)
        .service(api);
    // What the previous run left queued is fetched now, not with the first request.
    service.start_prefetcher::<Body, _>();
    BoxCloneSyncService::new(service.map_response(IntoResponse::into_response))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("image_server: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until Ctrl-C or SIGTERM; an error is a sentence naming what failed.
async fn run(args: Args) -> Result<(), String> {
    let images_dir = args.data_dir.join("images");
    let cache_dir = args.data_dir.join("cache");
    std::fs::create_dir_all(&images_dir)
        .map_err(|err| format!("cannot create {}: {err}", images_dir.display()))?;

    let admin_token = args
        .admin_token
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut callers: HashMap<String, Caller> = args.users.iter().cloned().collect();
    callers.insert(
        admin_token.clone(),
        Caller {
            project: "admin".into(),
            roles: vec!["admin".into()],
        },
    );
    let state = AppState::open(
        images_dir.clone(),
        callers,
        args.backend_rate,
        args.hashing_algorithm,
    )
    .map_err(|err| format!("cannot read the images in {}: {err}", images_dir.display()))?;
    let state = Arc::new(state);

    let mut cache_dir_used = None;
    let app = if args.no_cache {
        BoxCloneSyncService::new(api::router(state))
    } else {
        let config = if args.config_files.is_empty() {
            CacheConfig::new(&cache_dir)
        } else {
            CacheConfig::from_files(&args.config_files).map_err(|err| err.to_string())?
        };
        let dir = config.image_cache_dir.clone();
        let cache = ImageCache::open(config)
            .map_err(|err| format!("cannot open the cache at {}: {err}", dir.display()))?;
        cache_dir_used = Some(dir);
        match args.access_check {
            AccessChoice::Metadata => with_cache(
                api::router(state),
                cache,
                InnerMetadata::new(),
                &args,
                &admin_token,
            ),
            AccessChoice::Trust => {
                with_cache(api::router(state), cache, TrustAll, &args, &admin_token)
            }
        }
    };

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    println!("listening on http://{addr}");
    println!("admin token: {admin_token}");
    let cache_note = cache_dir_used
        .as_ref()
        .map_or_else(|| "off".to_owned(), |dir| dir.display().to_string());
    println!("data: {} (cache: {cache_note})", args.data_dir.display());
    println!("upload:   curl -s -X POST -H 'X-Auth-Token: {admin_token}' -d '{{\"name\": \"cirros\", \"disk_format\": \"qcow2\", \"container_format\": \"bare\"}}' http://{addr}/v2/images");
    println!("          curl -X PUT -H 'X-Auth-Token: {admin_token}' -H 'Content-Type: application/octet-stream' --data-binary @IMAGE_FILE http://{addr}/v2/images/ID/file");
    let expect = if cache_dir_used.is_some() {
        "   (X-Cache-Status: MISS, then HIT)"
    } else {
        ""
    };
    println!("download: curl -sD - -o /dev/null -H 'X-Auth-Token: {admin_token}' http://{addr}/v2/images/ID/file{expect}");
    if !args.no_cache {
        println!("cache:    curl -s -H 'X-Auth-Token: {admin_token}' http://{addr}/v2/cache   (and PUT/DELETE /v2/cache/ID, POST /v2/cache/prune)");
    }

    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(stop_signal())
        .await
        .map_err(|err| format!("the server failed: {err}"))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
