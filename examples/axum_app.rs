//! An axum application with state of its own, and the cache added the way that works: around
//! the whole router, once its state is given, not with `Router::layer` (which wraps each route
//! alone, so the cache could not ask the image's metadata route).
//!
//! ```text
//! cargo run --example axum_app -- --bind 127.0.0.1:9595
//! curl -X PUT -H 'X-Auth-Token: admin-secret' --data-binary @IMAGE http://127.0.0.1:9595/v2/images/demo/file
//! curl -sD - -o /dev/null -H 'X-Auth-Token: admin-secret' http://127.0.0.1:9595/v2/images/demo/file
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use md5::Digest;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

#[derive(Parser, Debug)]
#[command(about = "An axum app with its own state, with tower-image-cache around it")]
struct Args {
    /// Listen address (port 0 picks one; printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9595")]
    bind: SocketAddr,
    /// The cache's directory (image_cache_dir).
    #[arg(long, default_value = "./axum-app-cache")]
    cache_dir: PathBuf,
    /// Glance-style configuration files (`glance-api.conf`: `[DEFAULT] image_cache_dir`,
    /// `image_cache_driver = centralized_db`, `worker_self_reference_url`, `[database]
    /// connection`, ...); repeatable, later files win. They replace --cache-dir.
    #[arg(long = "config-file", value_name = "FILE")]
    config_files: Vec<PathBuf>,
    /// The one token the API and the management routes accept.
    #[arg(long, default_value = "admin-secret")]
    admin_token: String,
}

/// The application's own state: its images, and who may call it.
struct AppState {
    token: String,
    images: RwLock<HashMap<String, Bytes>>,
}

impl AppState {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        match headers.get("x-auth-token") {
            Some(token) if token.as_bytes() == self.token.as_bytes() => Ok(()),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }

    fn image(&self, id: &str) -> Result<Bytes, StatusCode> {
        let images = self.images.read().unwrap_or_else(|e| e.into_inner());
        images.get(id).cloned().ok_or(StatusCode::NOT_FOUND)
    }
}

type Shared = Arc<AppState>;

async fn show(State(app): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let data = match app.authorize(&headers).and_then(|()| app.image(&id)) {
        Ok(data) => data,
        Err(status) => return status.into_response(),
    };
    Json(serde_json::json!({
        "id": id,
        "status": "active",
        "size": data.len(),
        "checksum": hex::encode(md5::Md5::digest(&data)),
    }))
    .into_response()
}

async fn download(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match app.authorize(&headers).and_then(|()| app.image(&id)) {
        Ok(data) => Response::new(Body::from(data)),
        Err(status) => status.into_response(),
    }
}

/// A new upload replaces the image; the cache evicts its copy on the 2xx.
async fn upload(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    data: Bytes,
) -> StatusCode {
    if let Err(status) = app.authorize(&headers) {
        return status;
    }
    let mut images = app.images.write().unwrap_or_else(|e| e.into_inner());
    images.insert(id, data);
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(reason) = run(args).await {
        eprintln!("axum_app: {reason}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let state = Arc::new(AppState {
        token: args.admin_token.clone(),
        images: RwLock::new(HashMap::new()),
    });
    // The application, as it was before the cache: routes, then its state.
    let app: Router = Router::new()
        .route("/v2/images/{id}", get(show))
        .route("/v2/images/{id}/file", get(download).put(upload))
        .with_state(state);

    let config = if args.config_files.is_empty() {
        CacheConfig::new(&args.cache_dir)
    } else {
        CacheConfig::from_files(&args.config_files).map_err(|err| err.to_string())?
    };
    let dir = config.image_cache_dir.clone();
    let cache = ImageCache::open(config)
        .map_err(|err| format!("cannot open the cache at {}: {err}", dir.display()))?;
    let token = args.admin_token.as_str();
    // Around the whole router: the cache sees every route, so its access check can ask
    // `GET /v2/images/{id}` and the prefetcher can download.
    let cached = tower::ServiceBuilder::new()
        .layer(CacheManageLayer::new(cache.clone(), StaticToken::new(token)).service_token(token))
        .layer(CacheLayer::new(cache, InnerMetadata::new()))
        .service(app);
    cached.start_prefetcher::<Body, _>();
    let app = Router::new().fallback_service(cached);

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .await
        .map_err(|err| format!("the server stopped: {err}"))
}
