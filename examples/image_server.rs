//! A small image API in the shape of Glance v2, with the image cache in front of it.
//!
//! ```text
//! cargo run --release --example image_server -- --help
//! ```
//!
//! Images live under `DATA_DIR/images` (data and a JSON metadata file each), the cache under
//! `DATA_DIR/cache` (its `image_cache_dir`). Callers authenticate with `X-Auth-Token`: the admin
//! token (printed at start) and any `--user TOKEN=PROJECT:ROLE[,ROLE]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use futures_util::{stream, StreamExt};
use md5::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_image_cache::layer::AccessCheck;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata, TrustAll};

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
    /// `image_cache_max_size = ...`); repeatable, later files win. Its image_cache_dir replaces
    /// DIR/cache.
    #[arg(long = "config-file", value_name = "FILE")]
    config_files: Vec<PathBuf>,
    /// Run without the cache (to compare against).
    #[arg(long)]
    no_cache: bool,
    /// The hit path's access check.
    #[arg(long, value_enum, default_value = "metadata")]
    access_check: AccessChoice,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum AccessChoice {
    /// Ask `GET /v2/images/{id}` with the caller's token before every hit.
    Metadata,
    /// Serve every hit without asking (only behind an authorizing proxy).
    Trust,
}

#[derive(Clone, Debug)]
struct Caller {
    project: String,
    roles: Vec<String>,
}

impl Caller {
    fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// Glance's visibility rule: admins see all, public and community images are seen by all,
    /// private and shared ones by their owner's project.
    fn may_see(&self, image: &Image) -> bool {
        self.is_admin()
            || matches!(image.visibility.as_str(), "public" | "community")
            || image.owner == self.project
    }
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

/// An image as the API shows it (Glance's image document).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Image {
    id: String,
    name: Option<String>,
    status: String,
    visibility: String,
    owner: String,
    disk_format: Option<String>,
    container_format: Option<String>,
    size: Option<u64>,
    checksum: Option<String>,
    os_hash_algo: Option<String>,
    os_hash_value: Option<String>,
    protected: bool,
    tags: Vec<String>,
    created_at: String,
    updated_at: String,
    file: String,
    #[serde(rename = "self")]
    self_link: String,
    schema: String,
}

struct AppState {
    images_dir: PathBuf,
    images: Mutex<HashMap<String, Image>>,
    callers: HashMap<String, Caller>,
    throttle: Option<Arc<Throttle>>,
}

type Shared = Arc<AppState>;

/// An error answer, as Glance shapes them.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(status, message) = self;
        let body = serde_json::json!({ "error": { "code": status.as_u16(), "title": status.canonical_reason(), "message": message } });
        (status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError(status, message.to_owned())
}

type ApiResult = Result<Response, ApiError>;

fn now_iso() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl AppState {
    fn caller(&self, headers: &HeaderMap) -> Result<&Caller, ApiError> {
        // Two tokens are no token: a proxy joining them would send neither.
        let mut tokens = headers.get_all("x-auth-token").iter();
        let token = match (tokens.next(), tokens.next()) {
            (Some(token), None) => token.to_str().ok(),
            _ => None,
        };
        token
            .and_then(|t| self.callers.get(t))
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a valid X-Auth-Token is required"))
    }

    /// The image if `caller` may see it; 404 otherwise, as Glance answers.
    fn visible(&self, caller: &Caller, id: &str) -> Result<Image, ApiError> {
        let images = self.images.lock().unwrap();
        images
            .get(id)
            .filter(|i| caller.may_see(i))
            .cloned()
            .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("no image with id {id}")))
    }

    fn save(&self, image: &Image) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(image).map_err(std::io::Error::other)?;
        let tmp = self.images_dir.join(format!("{}.json.tmp", image.id));
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, self.images_dir.join(format!("{}.json", image.id)))?;
        self.images
            .lock()
            .unwrap()
            .insert(image.id.clone(), image.clone());
        Ok(())
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.images_dir.join(id)
    }
}

fn load_images(dir: &Path) -> std::io::Result<HashMap<String, Image>> {
    let mut images = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            match serde_json::from_slice::<Image>(&std::fs::read(&path)?) {
                Ok(image) => {
                    images.insert(image.id.clone(), image);
                }
                Err(err) => eprintln!("skipping {}: {err}", path.display()),
            }
        }
    }
    Ok(images)
}

async fn versions() -> Json<serde_json::Value> {
    let versions: Vec<serde_json::Value> = (0..=18)
        .rev()
        .map(|minor| {
            let status = match minor {
                18 => "CURRENT",
                _ => "SUPPORTED",
            };
            serde_json::json!({
                "id": format!("v2.{minor}"),
                "status": status,
                "links": [{"rel": "self", "href": "/v2/"}],
            })
        })
        .collect();
    Json(serde_json::json!({ "versions": versions }))
}

/// The image schema python-glanceclient downloads before it uses the v2 API.
async fn image_schema() -> Json<serde_json::Value> {
    let text = |description: &str| serde_json::json!({ "type": ["null", "string"], "description": description });
    Json(serde_json::json!({
        "name": "image",
        "additionalProperties": { "type": "string" },
        "properties": {
            "id": { "type": "string", "description": "An identifier for the image" },
            "name": text("Descriptive name for the image"),
            "status": { "type": "string", "readOnly": true, "description": "Status of the image",
                        "enum": ["queued", "saving", "active", "killed", "deleted", "deactivated", "uploading", "importing", "pending_delete"] },
            "visibility": { "type": "string", "enum": ["community", "public", "private", "shared"], "description": "Scope of image accessibility" },
            "owner": text("Owner of the image"),
            "disk_format": text("Format of the disk"),
            "container_format": text("Format of the container"),
            "size": { "type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes" },
            "checksum": { "type": ["null", "string"], "readOnly": true, "description": "md5 hash of image contents" },
            "os_hash_algo": { "type": ["null", "string"], "readOnly": true, "description": "Algorithm to calculate the os_hash_value" },
            "os_hash_value": { "type": ["null", "string"], "readOnly": true, "description": "Hexdigest of the image contents" },
            "protected": { "type": "boolean", "description": "If true, image will not be deletable" },
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 255 }, "description": "List of strings related to the image" },
            "created_at": { "type": "string", "readOnly": true, "description": "Date and time of image registration" },
            "updated_at": { "type": "string", "readOnly": true, "description": "Date and time of the last image modification" },
            "self": { "type": "string", "readOnly": true, "description": "An image self url" },
            "file": { "type": "string", "readOnly": true, "description": "An image file url" },
            "schema": { "type": "string", "readOnly": true, "description": "An image schema url" }
        },
        "links": [
            { "rel": "self", "href": "{self}" },
            { "rel": "enclosure", "href": "{file}" },
            { "rel": "describedby", "href": "{schema}" }
        ]
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewImage {
    name: Option<String>,
    disk_format: Option<String>,
    container_format: Option<String>,
    visibility: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    protected: bool,
}

async fn create_image(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = state.caller(&headers)?.clone();
    let document: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let new: NewImage = serde_json::from_slice(document).map_err(|err| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid image document: {err}"),
        )
    })?;
    let visibility = new.visibility.unwrap_or_else(|| "shared".into());
    if !matches!(
        visibility.as_str(),
        "public" | "private" | "shared" | "community"
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "visibility must be public, private, shared or community",
        ));
    }
    if visibility == "public" && !caller.is_admin() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only admins may create public images",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_iso();
    let image = Image {
        file: format!("/v2/images/{id}/file"),
        self_link: format!("/v2/images/{id}"),
        schema: "/v2/schemas/image".into(),
        id,
        name: new.name,
        status: "queued".into(),
        visibility,
        owner: caller.project.clone(),
        disk_format: new.disk_format,
        container_format: new.container_format,
        size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        protected: new.protected,
        tags: new.tags,
        created_at: now.clone(),
        updated_at: now,
    };
    state.save(&image).map_err(internal)?;
    Ok((StatusCode::CREATED, Json(image)).into_response())
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
}

async fn list_images(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let caller = state.caller(&headers)?;
    let images = state.images.lock().unwrap();
    let mut visible: Vec<&Image> = images.values().filter(|i| caller.may_see(i)).collect();
    visible.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let listing = serde_json::json!({ "images": visible, "schema": "/v2/schemas/images", "first": "/v2/images" });
    Ok(Json(listing).into_response())
}

async fn show_image(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    Ok(Json(state.visible(caller, &id)?).into_response())
}

async fn delete_image(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let image = state.visible(caller, &id)?;
    if !caller.is_admin() && image.owner != caller.project {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only the owner or an admin may delete an image",
        ));
    }
    if image.protected {
        return Err(error(StatusCode::FORBIDDEN, "the image is protected"));
    }
    state.images.lock().unwrap().remove(&id);
    let _ = std::fs::remove_file(state.images_dir.join(format!("{id}.json")));
    let _ = std::fs::remove_file(state.data_path(&id));
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn set_status(state: &AppState, headers: &HeaderMap, id: &str, from: &str, to: &str) -> ApiResult {
    let caller = state.caller(headers)?;
    if !caller.is_admin() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only admins may change an image's activation",
        ));
    }
    let mut image = state.visible(caller, id)?;
    if image.status != to {
        if image.status != from {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("an image in status {} cannot become {to}", image.status),
            ));
        }
        image.status = to.into();
        image.updated_at = now_iso();
        state.save(&image).map_err(internal)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deactivate(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    set_status(&state, &headers, &id, "active", "deactivated")
}

async fn reactivate(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    set_status(&state, &headers, &id, "deactivated", "active")
}

async fn upload(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let mut image = state.visible(caller, &id)?;
    if !caller.is_admin() && image.owner != caller.project {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only the owner or an admin may upload data",
        ));
    }
    if image.status != "queued" {
        let message = format!(
            "image data can only be uploaded to a queued image, not {}",
            image.status
        );
        return Err(error(StatusCode::CONFLICT, &message));
    }
    let partial = state.images_dir.join(format!("{id}.upload"));
    let (size, md5, sha512) = match write_upload(&partial, body).await {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("the upload failed: {err}"),
            ));
        }
    };
    tokio::fs::rename(&partial, state.data_path(&id))
        .await
        .map_err(internal)?;
    image.status = "active".into();
    image.size = Some(size);
    image.checksum = Some(md5);
    image.os_hash_algo = Some("sha512".into());
    image.os_hash_value = Some(sha512);
    image.updated_at = now_iso();
    state.save(&image).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn write_upload(
    path: &Path,
    body: Body,
) -> Result<(u64, String, String), Box<dyn std::error::Error + Send + Sync>> {
    let mut file = tokio::fs::File::create(path).await?;
    let (mut md5, mut sha512, mut size) = (md5::Md5::new(), sha2::Sha512::new(), 0u64);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        md5.update(&chunk);
        sha512.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((
        size,
        hex::encode(md5.finalize()),
        hex::encode(sha512.finalize()),
    ))
}

async fn download(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let image = state.visible(caller, &id)?;
    if image.status == "deactivated" && !caller.is_admin() {
        return Err(error(StatusCode::FORBIDDEN, "the image is deactivated"));
    }
    let Some(size) = image.size.filter(|_| image.status != "queued") else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    tracing::info!(image = %id, size, "reading image data from the image store");
    let file = tokio::fs::File::open(state.data_path(&id))
        .await
        .map_err(|err| internal(format!("the image data is unreadable: {err}")))?;
    let mut response = Response::new(Body::from_stream(read_throttled(
        file,
        state.throttle.clone(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    headers.insert(header::CONTENT_LENGTH, size.into());
    if let Some(checksum) = image.checksum.as_deref().and_then(|c| c.parse().ok()) {
        headers.insert("content-md5", checksum);
    }
    Ok(response)
}

/// The image store's bandwidth, shared by every read, like a remote store's link.
struct Throttle {
    bytes_per_second: u64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the slot in which `bytes` may pass.
    async fn pass(&self, bytes: usize) {
        let due = {
            let mut next_free = self.next_free.lock().unwrap();
            let start = (*next_free).max(Instant::now());
            *next_free =
                start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
            *next_free
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The image store's read: 1 MiB at a time, within the store's bandwidth when throttled.
fn read_throttled(
    file: tokio::fs::File,
    throttle: Option<Arc<Throttle>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    stream::try_unfold((file, throttle), |(mut file, throttle)| async move {
        let mut buf = vec![0u8; 1024 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(throttle) = &throttle {
            throttle.pass(n).await;
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, throttle))))
    })
}

fn api(state: Shared) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/versions", get(versions))
        .route("/v2/schemas/image", get(image_schema))
        .route("/v2/images", post(create_image).get(list_images))
        .route("/v2/images/{id}", get(show_image).delete(delete_image))
        .route("/v2/images/{id}/file", get(download).put(upload))
        .route("/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/v2/images/{id}/actions/reactivate", post(reactivate))
        .with_state(state)
}

/// The image API with the cache in front: the management routes (for the admin token, which
/// is also the prefetcher's identity) outside the cache layer, around the whole API.
fn with_cache<A>(api: Router, cache: ImageCache, access: A, admin_token: &str) -> Router
where
    A: AccessCheck<Router, Body>,
{
    let service = tower::ServiceBuilder::new()
        .layer(
            CacheManageLayer::new(cache.clone(), StaticToken::new(admin_token))
                .service_token(admin_token),
        )
        .layer(CacheLayer::new(cache, access))
        .service(api);
    Router::new().fallback_service(service)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let images_dir = args.data_dir.join("images");
    let cache_dir = args.data_dir.join("cache");
    std::fs::create_dir_all(&images_dir)?;

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
    let state = Arc::new(AppState {
        images: Mutex::new(load_images(&images_dir)?),
        images_dir,
        callers,
        throttle: args.backend_rate.map(|rate| Arc::new(Throttle::new(rate))),
    });

    let mut cache_dir_used = None;
    let app = if args.no_cache {
        api(state)
    } else {
        let config = if args.config_files.is_empty() {
            CacheConfig::new(&cache_dir)
        } else {
            CacheConfig::from_files(&args.config_files)?
        };
        cache_dir_used = Some(config.image_cache_dir.clone());
        let cache = ImageCache::open(config)?;
        match args.access_check {
            AccessChoice::Metadata => {
                with_cache(api(state), cache, InnerMetadata::new(), &admin_token)
            }
            AccessChoice::Trust => with_cache(api(state), cache, TrustAll, &admin_token),
        }
    };

    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("admin token: {admin_token}");
    let cache_note =
        cache_dir_used.map_or_else(|| "off".to_owned(), |dir| dir.display().to_string());
    println!("data: {} (cache: {cache_note})", args.data_dir.display());
    println!("upload:   curl -s -X POST -H 'X-Auth-Token: {admin_token}' -d '{{\"name\": \"cirros\", \"disk_format\": \"qcow2\", \"container_format\": \"bare\"}}' http://{addr}/v2/images");
    println!("          curl -X PUT -H 'X-Auth-Token: {admin_token}' -H 'Content-Type: application/octet-stream' --data-binary @IMAGE_FILE http://{addr}/v2/images/ID/file");
    println!("download: curl -sD - -o /dev/null -H 'X-Auth-Token: {admin_token}' http://{addr}/v2/images/ID/file   (X-Cache-Status: MISS, then HIT)");
    if !args.no_cache {
        println!("cache:    curl -s -H 'X-Auth-Token: {admin_token}' http://{addr}/v2/cache   (and PUT/DELETE /v2/cache/ID, POST /v2/cache/prune)");
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
