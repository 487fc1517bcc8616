//! Everything the cache writes is private to its user and group (files 0640, directories 0750
//! at most) whatever the umask, during a fill and after, and an older directory is tightened
//! when the cache opens it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under `dir` (and `dir` itself), with its mode.
fn modes_under(dir: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(dir.display().to_string(), mode(dir))];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(modes_under(&path));
        } else {
            out.push((path.display().to_string(), mode(&path)));
        }
    }
    out
}

fn assert_private(dir: &Path) {
    for (path, mode) in modes_under(dir) {
        assert_eq!(
            mode & 0o007,
            0,
            "{path} has mode {mode:o}: other users may use it"
        );
        assert_eq!(
            mode & 0o020,
            0,
            "{path} has mode {mode:o}: its group may write it"
        );
    }
}

fn lax_umask() {
    // The usual umask, which leaves files 0644 and directories 0755 to whoever sets no mode.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o022) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_and_its_image_are_private_under_umask_022() {
    lax_umask();
    let server = Arc::new(TestServer::start().await);
    let gate = Arc::new(Semaphore::new(2));
    let data = image_data(1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );
    server.api.add(
        "bad",
        FakeImage::private(image_data(70_000)).behavior(Behavior::WrongChecksum),
    );

    let download = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.get("img", OWNER).await.bytes().await })
    };
    let partial = server.cache_dir().join("incomplete/img");
    eventually("the fill's file appears in incomplete/", || {
        partial.exists()
    })
    .await;
    // Mid-fill: the partial file and every directory.
    assert_eq!(mode(&partial), 0o640);
    assert_eq!(mode(&server.cache_dir()), 0o750);
    assert_eq!(mode(&server.cache_dir().join("incomplete")), 0o750);
    assert_eq!(mode(&server.cache_dir().join("invalid")), 0o750);
    assert_eq!(mode(&server.cache_dir().join("cache.db")), 0o750);
    assert_private(&server.cache_dir());

    gate.add_permits(1000);
    assert_eq!(download.await.unwrap().unwrap(), data);
    assert!(server.get("bad", OWNER).await.bytes().await.is_err());
    server.cache.idle().await;
    let committed = server.cache_dir().join("img");
    eventually("the image is committed", || {
        server.cache.is_cached(&ImageId::new("img").unwrap())
    })
    .await;
    assert_eq!(mode(&committed), 0o640);
    assert_eq!(mode(&server.cache_dir().join("invalid/bad")), 0o640);
    // Queued ids and records live in the index, whose files are private too.
    server
        .cache
        .queue_image(&ImageId::new("later").unwrap())
        .unwrap();
    server.cache.flush_hits().unwrap();
    assert_private(&server.cache_dir());
}

#[test]
fn an_older_cache_directory_is_made_private_at_open() {
    lax_umask();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("cache");
    // As an older version (or Glance) left it under umask 022, or worse.
    std::fs::create_dir_all(base.join("invalid")).unwrap();
    std::fs::create_dir_all(base.join("incomplete")).unwrap();
    std::fs::write(base.join("img"), b"image bytes").unwrap();
    std::fs::write(base.join("invalid/old"), b"bad bytes").unwrap();
    for (path, mode) in [
        (base.clone(), 0o777),
        (base.join("invalid"), 0o755),
        (base.join("incomplete"), 0o775),
        (base.join("img"), 0o666),
        (base.join("invalid/old"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cache = ImageCache::open(CacheConfig::new(&base)).unwrap();
    assert!(
        cache.is_cached(&ImageId::new("img").unwrap()),
        "the image is adopted"
    );
    assert_eq!(mode(&base), 0o750);
    assert_eq!(mode(&base.join("invalid")), 0o750);
    assert_eq!(mode(&base.join("incomplete")), 0o750);
    assert_eq!(mode(&base.join("img")), 0o640);
    assert_eq!(mode(&base.join("invalid/old")), 0o640);
    assert_private(&base);
    // The bytes are as they were.
    assert_eq!(std::fs::read(base.join("img")).unwrap(), b"image bytes");
}
