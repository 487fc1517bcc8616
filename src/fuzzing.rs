//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), for fuzzing the crate's
//! parsers; not covered by semver. Each function runs one parser on arbitrary input and panics
//! when a property the cache relies on breaks.

use std::path::{Component, Path, PathBuf};

use http::{header, HeaderMap, HeaderValue, Method};

use crate::layer::{decide, Action, Answer, Described, Routes};
use crate::manage::Endpoint;
use crate::{CacheConfig, ImageId};

/// Panics unless `id` is one plain file name that stays inside the directory it is joined to.
pub fn assert_safe_on_disk(id: &ImageId) {
    let name = id.as_str();
    assert!(!name.is_empty() && name.len() <= 255, "{name:?}: length");
    assert!(
        !name.contains(['/', '\\', '\0', '%']),
        "{name:?}: a separator, NUL or escape"
    );
    let mut components = Path::new(name).components();
    assert!(
        matches!(components.next(), Some(Component::Normal(_))) && components.next().is_none(),
        "{name:?}: not a single plain component"
    );
    let joined = Path::new("/cache").join(name);
    assert_eq!(
        joined.parent(),
        Some(Path::new("/cache")),
        "{name:?}: escapes"
    );
}

/// The id validator: whatever it accepts is safe on disk, and it accepts its own output.
pub fn image_id(input: &str) {
    if let Ok(id) = ImageId::new(input) {
        assert_safe_on_disk(&id);
        assert_eq!(id.as_str(), input);
    }
}

/// The layer's default routes and the management routes, on any method and path: an id taken
/// from a path is always safe on disk.
pub fn route(method: &[u8], path: &str) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    match Routes::default().classify(&method, path) {
        Action::Download(id) | Action::Evict(id) | Action::Change(id) => assert_safe_on_disk(&id),
        Action::UnsafeDownload | Action::PassThrough => {}
    }
    if let Some(endpoint) = Endpoint::parse(path) {
        assert!(!endpoint.allowed().is_empty());
        let raw = match endpoint {
            Endpoint::CacheImage(raw)
            | Endpoint::Nodes(raw)
            | Endpoint::CachedImage(raw)
            | Endpoint::QueuedImage(raw) => raw,
            _ => return,
        };
        if let Ok(id) = ImageId::new(raw) {
            assert_safe_on_disk(&id);
        }
    }
}

/// A hit's answer to `Range` (and `If-Range`) on an image of `size` bytes: a part always lies
/// inside the image and is not empty.
pub fn range(range: &[u8], if_range: Option<&[u8]>, size: u64) {
    let mut headers = HeaderMap::new();
    for value in range.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(header::RANGE, value);
        }
    }
    if let Some(if_range) = if_range.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::IF_RANGE, if_range);
    }
    let described = Described::of(size, Some("d41d8cd98f00b204e9800998ecf8427e"));
    if let Answer::Part(part) = decide(&headers, &described) {
        assert!(
            part.start() <= part.end() && *part.end() < size,
            "{part:?} of {size} bytes"
        );
    }
}

/// Configuration files given as texts, in order: loading never panics, and what loads keeps
/// the database inside the cache directory.
pub fn config(texts: &[&str]) {
    let texts: Vec<(PathBuf, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| (PathBuf::from(format!("fuzz-{i}.conf")), (*text).to_owned()))
        .collect();
    if let Ok(config) = CacheConfig::from_texts(&texts, None) {
        let db = config.db_path();
        assert_eq!(db.parent(), Some(config.image_cache_dir.as_path()));
        assert!(crate::config::db_name_problem(&config.image_cache_sqlite_db).is_none());
    }
}
