//! The image API's records: its callers and their visibility rules, its images (Glance's
//! image document) on disk and in memory, and the data files reads keep open.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{error, ApiError};
use crate::store::Throttle;

/// Who calls: a project and its roles, known by token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub project: String,
    pub roles: Vec<String>,
}

impl Caller {
    pub(crate) fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// Glance's default `download_image` rule, roughly: an admin or a `member` may download
    /// what it may see; a `reader` sees the metadata only.
    pub(crate) fn may_download(&self) -> bool {
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
pub(crate) struct Image {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) status: String,
    pub(crate) visibility: String,
    pub(crate) owner: String,
    pub(crate) disk_format: Option<String>,
    pub(crate) container_format: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) checksum: Option<String>,
    pub(crate) os_hash_algo: Option<String>,
    pub(crate) os_hash_value: Option<String>,
    pub(crate) protected: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) file: String,
    #[serde(rename = "self")]
    pub(crate) self_link: String,
    pub(crate) schema: String,
}

/// The image API's state: its images on disk and in memory, its callers, its store's link.
pub struct AppState {
    images_dir: PathBuf,
    images: Mutex<HashMap<String, Arc<Image>>>,
    /// Data files kept open for small reads, by image id.
    open_files: Mutex<HashMap<String, Arc<File>>>,
    callers: HashMap<String, Caller>,
    pub(crate) throttle: Option<Arc<Throttle>>,
    pub(crate) hashing: HashingAlgorithm,
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
    pub(crate) fn name(self) -> Option<&'static str> {
        Some(match self {
            HashingAlgorithm::Sha512 => "sha512",
            HashingAlgorithm::Sha384 => "sha384",
            HashingAlgorithm::Sha256 => "sha256",
            HashingAlgorithm::Sha1 => "sha1",
            HashingAlgorithm::Md5 => "md5",
            HashingAlgorithm::None => return None,
        })
    }

    pub(crate) fn hasher(self) -> Option<Box<dyn sha2::digest::DynDigest + Send>> {
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

pub(crate) fn now_iso() -> String {
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
            open_files: Mutex::new(HashMap::new()),
            images_dir,
            callers,
            throttle: backend_rate.map(|rate| Arc::new(Throttle::new(rate))),
            hashing,
        })
    }

    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<&Caller, ApiError> {
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
    pub(crate) fn visible(&self, caller: &Caller, id: &str) -> Result<Arc<Image>, ApiError> {
        let images = self.images.lock().unwrap();
        images
            .get(id)
            .filter(|i| caller.may_see(i))
            .cloned()
            .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("no image with id {id}")))
    }

    /// The images `caller` may see, oldest first.
    pub(crate) fn listed(&self, caller: &Caller) -> Vec<Arc<Image>> {
        let images = self.images.lock().unwrap();
        let mut visible: Vec<Arc<Image>> = images
            .values()
            .filter(|i| caller.may_see(i))
            .cloned()
            .collect();
        visible.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        visible
    }

    /// Writes `image`'s document (to a temporary file renamed into place) and shows it.
    pub(crate) fn save(&self, image: Image) -> std::io::Result<Arc<Image>> {
        let json = serde_json::to_vec_pretty(&image).map_err(std::io::Error::other)?;
        let tmp = self.images_dir.join(format!("{}.json.tmp", image.id));
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, self.images_dir.join(format!("{}.json", image.id)))?;
        let image = Arc::new(image);
        let mut images = self.images.lock().unwrap();
        images.insert(image.id.clone(), image.clone());
        Ok(image)
    }

    /// Forgets `id`: its document, its data and the data file kept open.
    pub(crate) fn remove(&self, id: &str) {
        self.images.lock().unwrap().remove(id);
        self.open_files.lock().unwrap().remove(id);
        let _ = std::fs::remove_file(self.images_dir.join(format!("{id}.json")));
        let _ = std::fs::remove_file(self.data_path(id));
    }

    /// Where an upload of `id` is written before it is complete.
    pub(crate) fn upload_path(&self, id: &str) -> PathBuf {
        self.images_dir.join(format!("{id}.upload"))
    }

    /// Puts a complete upload of `id` in place as its data.
    pub(crate) fn store_upload(&self, id: &str) -> std::io::Result<()> {
        std::fs::rename(self.upload_path(id), self.data_path(id))?;
        self.open_files.lock().unwrap().remove(id);
        Ok(())
    }

    /// `id`'s data file, opened once and kept (reads of a few bytes, such as a cache's access
    /// probe, then cost no open and close each).
    pub(crate) fn data_file(&self, id: &str) -> std::io::Result<Arc<File>> {
        if let Some(file) = self.open_files.lock().unwrap().get(id) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.data_path(id))?);
        let mut open = self.open_files.lock().unwrap();
        if open.len() >= MAX_OPEN_FILES {
            open.clear();
        }
        Ok(open.entry(id.to_owned()).or_insert(file).clone())
    }

    /// Where `id`'s data is.
    pub(crate) fn data_path(&self, id: &str) -> PathBuf {
        self.images_dir.join(id)
    }
}

/// How many data files are kept open at most (all are closed when it is reached).
const MAX_OPEN_FILES: usize = 256;

fn load_images(dir: &Path) -> std::io::Result<HashMap<String, Arc<Image>>> {
    let mut images = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            match serde_json::from_slice::<Image>(&std::fs::read(&path)?) {
                Ok(image) => {
                    images.insert(image.id.clone(), Arc::new(image));
                }
                Err(err) => eprintln!("skipping {}: {err}", path.display()),
            }
        }
    }
    Ok(images)
}
