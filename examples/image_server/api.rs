//! The image API: a small Glance v2 (images with metadata, upload, download, delete,
//! deactivate), its callers and their visibility rules, and a throttled image store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use md5::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::store::{read_throttled, Throttle};

/// Who calls: a project and its roles, known by token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub project: String,
    pub roles: Vec<String>,
}

impl Caller {
    fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// Glance's default `download_image` rule, roughly: an admin or a `member` may download
    /// what it may see; a `reader` sees the metadata only.
    fn may_download(&self) -> bool {
        self.is_admin() || self.roles.iter().any(|r| r == "member")
    }

    /// Glance's visibility rule: admins see all, public and community images are seen by all,
    /// private and shared ones by their owner's project.
    fn may_see(&self, image: &Image) -> bool {
        self.is_admin()
            || matches!(image.visibility.as_str(), "public" | "community")
            || image.owner == self.project
    }
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

/// The image API's state: its images on disk and in memory, its callers, its store's link.
pub struct AppState {
    images_dir: PathBuf,
    images: Mutex<HashMap<String, Image>>,
    callers: HashMap<String, Caller>,
    throttle: Option<Arc<Throttle>>,
    hashing: HashingAlgorithm,
}

/// The multihash an upload records (`os_hash_algo`), as Glance's `hashing_algorithm` option.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum HashingAlgorithm {
    #[default]
    Sha512,
    Sha384,
    Sha256,
    Sha1,
    Md5,
    /// No multihash, only `checksum` (MD5): an image uploaded before Glance had multihashes.
    None,
}

impl HashingAlgorithm {
    fn name(self) -> Option<&'static str> {
        Some(match self {
            HashingAlgorithm::Sha512 => "sha512",
            HashingAlgorithm::Sha384 => "sha384",
            HashingAlgorithm::Sha256 => "sha256",
            HashingAlgorithm::Sha1 => "sha1",
            HashingAlgorithm::Md5 => "md5",
            HashingAlgorithm::None => return None,
        })
    }

    fn hasher(self) -> Option<Box<dyn sha2::digest::DynDigest + Send>> {
        Some(match self {
            HashingAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
            HashingAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            HashingAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            HashingAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            HashingAlgorithm::Md5 => Box::new(md5::Md5::default()),
            HashingAlgorithm::None => return None,
        })
    }
}

pub type Shared = Arc<AppState>;

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
    /// The API over the images in `images_dir`, for `callers`, reading its store at
    /// `backend_rate` bytes per second in all when given, recording `hashing`'s multihash of
    /// each upload.
    pub fn open(
        images_dir: PathBuf,
        callers: HashMap<String, Caller>,
        backend_rate: Option<u64>,
        hashing: HashingAlgorithm,
    ) -> std::io::Result<Self> {
        Ok(AppState {
            images: Mutex::new(load_images(&images_dir)?),
            images_dir,
            callers,
            throttle: backend_rate.map(|rate| Arc::new(Throttle::new(rate))),
            hashing,
        })
    }

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
    let (size, md5, os_hash) = match write_upload(&partial, body, state.hashing).await {
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
    image.os_hash_algo = state.hashing.name().map(str::to_owned);
    image.os_hash_value = os_hash;
    image.updated_at = now_iso();
    state.save(&image).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Writes the upload to `path`; its size, MD5 and multihash (with `hashing`), as hex.
async fn write_upload(
    path: &Path,
    body: Body,
    hashing: HashingAlgorithm,
) -> Result<(u64, String, Option<String>), Box<dyn std::error::Error + Send + Sync>> {
    let mut file = tokio::fs::File::create(path).await?;
    let (mut md5, mut multihash, mut size) = (md5::Md5::new(), hashing.hasher(), 0u64);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        md5.update(&chunk);
        if let Some(multihash) = multihash.as_mut() {
            multihash.update(&chunk);
        }
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((
        size,
        hex::encode(md5.finalize()),
        multihash.map(|multihash| hex::encode(multihash.finalize())),
    ))
}

/// Reads of at most this many bytes are done in place, not on a blocking thread.
const READ_IN_PLACE: u64 = 64 * 1024;

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
    if !caller.may_download() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "You are not authorized to complete download_image action.",
        ));
    }
    let Some(size) = image.size.filter(|_| image.status != "queued") else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // One range (`bytes=A-B`, `bytes=A-`, `bytes=-N`), as Glance answers it; the store reads
    // only those bytes.
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok())
        .and_then(|r| r.validate(size).ok())
        .and_then(|ranges| (ranges.len() == 1).then(|| ranges[0].clone()));
    let (start, len) = match &range {
        Some(range) => (*range.start(), range.end() - range.start() + 1),
        None => (0, size),
    };
    let unreadable = |err: std::io::Error| internal(format!("the image data is unreadable: {err}"));
    let mut response = if len <= READ_IN_PLACE && state.throttle.is_none() {
        // A few pages (the cache's one-byte access probe, a small image): read here, as a
        // page-cache copy costs less than two hand-offs to a blocking thread.
        tracing::debug!(image = %id, size, start, len, "reading image data from the image store");
        let file = std::fs::File::open(state.data_path(&id)).map_err(unreadable)?;
        let mut bytes = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start).map_err(unreadable)?;
        Response::new(Body::from(bytes))
    } else {
        tracing::info!(image = %id, size, start, len, "reading image data from the image store");
        let mut file = tokio::fs::File::open(state.data_path(&id))
            .await
            .map_err(unreadable)?
            .into_std()
            .await;
        if start > 0 {
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(unreadable)?;
        }
        Response::new(Body::from_stream(read_throttled(
            file,
            len,
            state.throttle.clone(),
        )))
    };
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {start}-{}/{size}", start + len - 1);
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, content_range.parse().unwrap());
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    headers.insert(header::CONTENT_LENGTH, len.into());
    if let Some(checksum) = image
        .checksum
        .as_deref()
        .filter(|_| range.is_none())
        .and_then(|c| c.parse().ok())
    {
        headers.insert("content-md5", checksum);
    }
    Ok(response)
}

/// The image API's routes.
pub fn router(state: Shared) -> Router {
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
