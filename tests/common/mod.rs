//! A fake Glance-style image API with switchable misbehaviour, and a real server around it.
#![allow(dead_code)]

pub mod example;
pub mod hostile;
pub mod openstack;
pub mod raw_upstream;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use md5::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tower::Layer;
use tower_image_cache::layer::AccessCheck;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

pub const ADMIN: &str = "admin-token";
pub const OWNER: &str = "owner-token";
pub const OTHER: &str = "other-token";
/// A caller the API knows but refuses everything (403).
pub const SUSPENDED: &str = "suspended-token";
const CHUNK: usize = 64 * 1024;

/// How the fake API sends an image's data.
#[derive(Clone)]
pub enum Behavior {
    Normal,
    /// The bytes are not the image's: `Content-MD5` and the metadata's hashes name other bytes.
    WrongChecksum,
    /// `Content-Length` promises twice what is sent.
    ShortBody,
    /// Half the data, then an error; a ranged request is answered right (206).
    FailMidStream,
    /// Half the data, then an error, also for every ranged request (half of its part).
    FailMidStreamAlways,
    /// Half the data, then an error; a ranged request gets the whole image (200).
    FailMidStreamIgnoringRange,
    /// Half the data, then an error; a ranged request gets a 206 whose Content-Range is off
    /// by one byte.
    FailMidStreamWrongRange,
    /// Half the data, then an error; a ranged request gets the right Content-Range with
    /// other bytes.
    FailMidStreamWrongBytes,
    /// Half the data, then nothing ever again (the connection stays open); a ranged request
    /// is answered right.
    StallMidStream,
    /// Each chunk waits for a permit.
    Gated(Arc<Semaphore>),
    /// Each chunk waits for a permit, and `Content-MD5` names other bytes.
    GatedWrongChecksum(Arc<Semaphore>),
    /// `204 No Content`.
    NoContent,
    /// `Content-Encoding: gzip`.
    Encoded,
    /// The metadata's `os_hash_value` names other bytes (`Content-MD5` is right).
    WrongOsHash,
    /// The download answers 500.
    ServerError,
    /// The download never answers (the connection stays open).
    Hang,
    /// The metadata's multihash is of an algorithm the cache does not know (`blake3`).
    UnknownHashAlgorithm,
    /// An MD5-only image (no multihash) whose download sends other bytes of the same length,
    /// with a `Content-MD5` that names those bytes: only the metadata's `checksum` is right.
    PoisonedMd5,
}

#[derive(Clone)]
pub struct FakeImage {
    pub data: Bytes,
    pub owner: &'static str,
    pub public: bool,
    pub status: &'static str,
    pub deleted: bool,
    pub behavior: Behavior,
}

impl FakeImage {
    pub fn private(data: impl Into<Bytes>) -> Self {
        FakeImage {
            data: data.into(),
            owner: "p1",
            public: false,
            status: "active",
            deleted: false,
            behavior: Behavior::Normal,
        }
    }

    pub fn behavior(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }
}

#[derive(Default)]
pub struct FakeApi {
    images: Mutex<HashMap<String, FakeImage>>,
    pub body_requests: AtomicUsize,
    pub metadata_requests: AtomicUsize,
    /// Downloads asked with `Range` (a fill resuming, or a client's range), probes aside.
    pub ranged_requests: AtomicUsize,
    /// The access check's probes of the download (`Range: bytes=0-0`).
    pub probe_requests: AtomicUsize,
    /// Each download as it came: its `Range`, and whether it was marked as the cache's fill.
    pub downloads: Mutex<Vec<(Option<String>, bool)>>,
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

pub fn sha512_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(data))
}

pub fn image_data(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn add(&self, id: &str, image: FakeImage) {
        self.images.lock().unwrap().insert(id.to_owned(), image);
    }

    pub fn update(&self, id: &str, change: impl FnOnce(&mut FakeImage)) {
        change(self.images.lock().unwrap().get_mut(id).unwrap());
    }

    pub fn body_requests(&self) -> usize {
        self.body_requests.load(Ordering::SeqCst)
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v2/images/{id}", get(metadata).delete(delete))
            .route("/v2/images/{id}/file", get(download).put(upload))
            .with_state(Arc::clone(self))
    }

    /// The image as this caller may see it, or the status the API answers.
    fn visible(&self, headers: &HeaderMap, id: &str) -> Result<(FakeImage, bool), StatusCode> {
        let (project, admin) = match headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
            Some(ADMIN) => ("admin", true),
            Some(OWNER) => ("p1", false),
            Some(OTHER) => ("p2", false),
            Some(SUSPENDED) => return Err(StatusCode::FORBIDDEN),
            _ => return Err(StatusCode::UNAUTHORIZED),
        };
        let images = self.images.lock().unwrap();
        let image = images
            .get(id)
            .filter(|i| !i.deleted)
            .ok_or(StatusCode::NOT_FOUND)?;
        if !(admin || image.public || image.owner == project) {
            return Err(StatusCode::NOT_FOUND);
        }
        Ok((image.clone(), admin))
    }
}

async fn metadata(
    State(api): State<Arc<FakeApi>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response<Body> {
    api.metadata_requests.fetch_add(1, Ordering::SeqCst);
    match api.visible(&headers, &id) {
        Ok((image, _)) => {
            let doc = serde_json::json!({
                "id": id,
                "status": image.status,
                "size": image.data.len(),
                "checksum": match image.behavior {
                    Behavior::WrongChecksum | Behavior::GatedWrongChecksum(_) => {
                        md5_hex(b"something else")
                    }
                    _ => md5_hex(&image.data),
                },
                "os_hash_algo": match image.behavior {
                    Behavior::UnknownHashAlgorithm => Some("blake3"),
                    Behavior::PoisonedMd5 => None,
                    _ => Some("sha512"),
                },
                // Bytes that are not the image's disagree with both of its hashes.
                "os_hash_value": match image.behavior {
                    Behavior::WrongOsHash
                    | Behavior::WrongChecksum
                    | Behavior::GatedWrongChecksum(_) => Some(sha512_hex(b"other bytes")),
                    Behavior::PoisonedMd5 => None,
                    _ => Some(sha512_hex(&image.data)),
                },
            });
            Response::new(Body::from(doc.to_string()))
        }
        Err(status) => status_response(status),
    }
}

async fn delete(
    State(api): State<Arc<FakeApi>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response<Body> {
    match api.visible(&headers, &id) {
        Ok(_) => {
            api.update(&id, |image| image.deleted = true);
            status_response(StatusCode::NO_CONTENT)
        }
        Err(status) => status_response(status),
    }
}

async fn upload(
    State(api): State<Arc<FakeApi>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    match api.visible(&headers, &id) {
        Ok(_) => {
            api.update(&id, |image| image.data = body);
            status_response(StatusCode::NO_CONTENT)
        }
        Err(status) => status_response(status),
    }
}

fn status_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{{\"status\": {}}}", status.as_u16())));
    *response.status_mut() = status;
    response
}

async fn download(
    State(api): State<Arc<FakeApi>>,
    UrlPath(id): UrlPath<String>,
    fill: Option<axum::Extension<tower_image_cache::layer::FillRequest>>,
    headers: HeaderMap,
) -> Response<Body> {
    let range = headers
        .get(header::RANGE)
        .map(|r| r.to_str().unwrap().to_owned());
    let marked = fill.is_some_and(|fill| fill.image().as_str() == id);
    api.downloads.lock().unwrap().push((range, marked));
    let (image, admin) = match api.visible(&headers, &id) {
        Ok(found) => found,
        Err(status) => return status_response(status),
    };
    if image.status != "active" && !admin {
        return status_response(StatusCode::FORBIDDEN);
    }
    match image.behavior {
        Behavior::Hang => std::future::pending::<()>().await,
        Behavior::NoContent => return status_response(StatusCode::NO_CONTENT),
        Behavior::ServerError => return status_response(StatusCode::INTERNAL_SERVER_ERROR),
        _ => {}
    }
    // The access check's probe (`Range: bytes=0-0`) is counted apart from reads of the data.
    let probe = headers.get(header::RANGE).is_some_and(|r| r == "bytes=0-0");
    if probe {
        api.probe_requests.fetch_add(1, Ordering::SeqCst);
    } else {
        api.body_requests.fetch_add(1, Ordering::SeqCst);
    }
    let data = match image.behavior {
        Behavior::PoisonedMd5 => image
            .data
            .iter()
            .map(|b| b ^ 0x5a)
            .collect::<Vec<u8>>()
            .into(),
        _ => image.data.clone(),
    };
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        if !probe {
            api.ranged_requests.fetch_add(1, Ordering::SeqCst);
        }
        let (start, end) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .unwrap();
        let start: usize = start.parse().unwrap();
        let end: usize = end
            .parse::<usize>()
            .map_or(data.len() - 1, |e| e.min(data.len() - 1));
        let mut part = data.slice(start..end + 1);
        let mut content_range = format!("bytes {start}-{end}/{}", data.len());
        match image.behavior {
            _ if probe => {}
            Behavior::FailMidStreamIgnoringRange => {
                return Response::builder()
                    .header(header::CONTENT_LENGTH, data.len())
                    .body(Body::from(data))
                    .unwrap();
            }
            Behavior::FailMidStreamWrongRange => {
                content_range = format!("bytes {}-{end}/{}", start + 1, data.len());
                part = part.slice(1..);
            }
            Behavior::FailMidStreamWrongBytes => {
                part = part.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>().into();
            }
            _ => {}
        }
        let builder = Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, content_range)
            .header(header::CONTENT_LENGTH, part.len());
        let body = match image.behavior {
            _ if probe => Body::from(part),
            Behavior::FailMidStreamAlways => half_then(part, Cut::Error),
            _ => Body::from(part),
        };
        return builder.body(body).unwrap();
    }
    let length = match image.behavior {
        Behavior::ShortBody => data.len() * 2,
        _ => data.len(),
    };
    let md5 = match image.behavior {
        Behavior::WrongChecksum | Behavior::GatedWrongChecksum(_) => md5_hex(b"something else"),
        _ => md5_hex(&data),
    };
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header("content-md5", md5);
    if let Behavior::Encoded = image.behavior {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
    }
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(|c| data.slice_ref(c)).collect();
    let body = match image.behavior {
        Behavior::FailMidStream
        | Behavior::FailMidStreamAlways
        | Behavior::FailMidStreamIgnoringRange
        | Behavior::FailMidStreamWrongRange
        | Behavior::FailMidStreamWrongBytes => half_then(data, Cut::Error),
        Behavior::StallMidStream => half_then(data, Cut::Stall),
        Behavior::Gated(gate) | Behavior::GatedWrongChecksum(gate) => {
            Body::from_stream(stream::iter(chunks).then(move |chunk| {
                let gate = Arc::clone(&gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, std::io::Error>(chunk)
                }
            }))
        }
        _ => Body::from_stream(stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        )),
    };
    builder.body(body).unwrap()
}

/// How a body sent half is cut.
enum Cut {
    Error,
    Stall,
}

/// The first half of `data` (at least one chunk), then an error or a stall.
fn half_then(data: Bytes, cut: Cut) -> Body {
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(|c| data.slice_ref(c)).collect();
    let half = (chunks.len() / 2).max(1);
    let head = stream::iter(chunks.into_iter().take(half).map(Ok::<_, std::io::Error>));
    match cut {
        Cut::Error => Body::from_stream(head.chain(stream::once(async {
            Err(std::io::Error::other("backend store went away"))
        }))),
        Cut::Stall => Body::from_stream(head.chain(stream::pending())),
    }
}

/// The fake API behind a `CacheLayer`, served on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    pub api: Arc<FakeApi>,
    pub cache: ImageCache,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|dir| ImageCache::open(CacheConfig::new(dir)).unwrap()).await
    }

    pub async fn start_with(open: impl FnOnce(&Path) -> ImageCache) -> Self {
        Self::start_with_check(open, InnerMetadata::new()).await
    }

    pub async fn start_with_check<A>(open: impl FnOnce(&Path) -> ImageCache, check: A) -> Self
    where
        A: AccessCheck<Router, axum::body::Body>,
    {
        Self::start_with_layer(open, check, |layer| layer).await
    }

    /// The fake API behind the `CacheLayer` that `configure` makes of the default one.
    pub async fn start_with_layer<A>(
        open: impl FnOnce(&Path) -> ImageCache,
        check: A,
        configure: impl FnOnce(CacheLayer<A>) -> CacheLayer<A>,
    ) -> Self
    where
        A: AccessCheck<Router, axum::body::Body>,
    {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(&dir.path().join("cache"));
        let api = FakeApi::new();
        let layer = configure(CacheLayer::new(cache.clone(), check));
        let app = Router::new().fallback_service(layer.layer(api.router()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestServer {
            addr,
            api,
            cache,
            dir,
            client: reqwest::Client::new(),
        }
    }

    /// The fake API behind `CacheManageLayer` (admin token, also the service identity) and
    /// `CacheLayer`, with the cache `open` returns for `<tempdir>/cache`.
    pub async fn start_managed(open: impl FnOnce(&Path) -> ImageCache) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(&dir.path().join("cache"));
        let api = FakeApi::new();
        let addr = serve_managed(&cache, &api).await;
        TestServer {
            addr,
            api,
            cache,
            dir,
            client: reqwest::Client::new(),
        }
    }

    /// A management call as the admin.
    pub async fn manage(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.manage_as(method, path, ADMIN).await
    }

    pub async fn manage_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap()
    }

    /// Adds `image` to the API as `id` and downloads it once as its owner: it is cached.
    pub async fn add_cached(&self, id: &str, image: FakeImage) {
        self.api.add(id, image);
        self.get(id, OWNER).await.bytes().await.unwrap();
        self.cache.idle().await;
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, id: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v2/images/{id}/file")))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap()
    }

    /// Asserts that `image` is neither cached nor on disk, and that no fill left a partial file.
    pub fn assert_not_committed(&self, image: &str) {
        let id = tower_image_cache::ImageId::new(image).unwrap();
        assert!(!self.cache.is_cached(&id), "{image} is cached");
        assert!(!self.cache_dir().join(image).exists(), "{image} has a file");
        assert!(
            listing(&self.cache_dir().join("incomplete")).is_empty(),
            "a partial file is left in incomplete/"
        );
    }

    /// The names directly in the cache directory, sorted.
    pub fn cache_listing(&self) -> Vec<String> {
        listing(&self.cache_dir())
    }
}

/// Serves `api` behind `CacheManageLayer` (admin token, also the service identity) and
/// `CacheLayer` on 127.0.0.1; returns the address.
pub async fn serve_managed(cache: &ImageCache, api: &Arc<FakeApi>) -> SocketAddr {
    let service = tower::ServiceBuilder::new()
        .layer(CacheManageLayer::new(cache.clone(), StaticToken::new(ADMIN)).service_token(ADMIN))
        .layer(CacheLayer::new(cache.clone(), InnerMetadata::new()))
        .service(api.router());
    let app = Router::new().fallback_service(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn cache_status(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("x-cache-status")
        .map_or("", |v| v.to_str().unwrap())
}

/// Sends a request line exactly as given (no URL normalisation) and returns the status code.
pub async fn raw_status(addr: SocketAddr, method: &str, target: &str, token: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until `condition` holds, failing after ten seconds (for work done by another task).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn json(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct SmallFs {
    /// The mount point, when it is a directory of its own.
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` (mount(8) syntax) on a new directory, or says why it cannot.
    pub fn mount(size: &str) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut fs = Self::mount_on(dir.path(), size)?;
        fs._dir = Some(dir);
        Ok(fs)
    }

    /// Mounts a tmpfs of `size` on the existing directory `path`, or says why it cannot.
    pub fn mount_on(path: &Path, size: &str) -> Result<SmallFs, String> {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallFs {
            _dir: None,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remounts it read-only (`true`) or read-write.
    pub fn set_read_only(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let status = std::process::Command::new("mount")
            .args(["-o", mode])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {mode} failed");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// What the test's tracing subscriber wrote.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures what every thread logs at `level` and above for `target`, for the rest of the
    /// test binary (the fill writes from blocking threads, which a thread-local subscriber
    /// misses). Once per test binary.
    pub fn install_global(filter: &str) -> Self {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_env_filter(filter)
            .with_ansi(false)
            .init();
        logs
    }

    /// Captures what is logged at `warn` and above on this thread until the guard is dropped
    /// (a `#[tokio::test]` runtime has one thread: every task logs here).
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The value of the metric line starting with `name` (labels included) in `text`, or 0.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
pub fn test_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tower-image-cache test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
