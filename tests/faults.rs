//! A fault at each step of a fill (its file operations, then the index insert and flush), through
//! the layer: the client still gets every byte, nothing is committed, and a later download fills
//! the cache.
#![cfg(feature = "fuzzing")] // the fault seam (ImageCache::open_with_io)

mod common;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use tower_image_cache::store::{FillIo, IndexStep};
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Create,
    Write,
    Fsync,
    Rename,
    DirFsync,
    IndexInsert,
    IndexFlush,
}

/// Fails `step` once, while armed, as the disk would.
struct FailOnce {
    step: Step,
    armed: AtomicBool,
}

impl FailOnce {
    fn fail(&self, step: Step) -> io::Result<()> {
        if step == self.step && self.armed.swap(false, Ordering::SeqCst) {
            return Err(match step {
                Step::Write => io::Error::from_raw_os_error(28), // ENOSPC
                _ => io::Error::from_raw_os_error(5),            // EIO
            });
        }
        Ok(())
    }
}

impl FillIo for FailOnce {
    fn create(&self, path: &Path) -> io::Result<File> {
        self.fail(Step::Create)?;
        File::create(path)
    }

    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        self.fail(Step::Write)?;
        io::Write::write_all(file, buf)
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.fail(Step::Fsync)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.fail(Step::Rename)?;
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fail(Step::DirFsync)?;
        File::open(dir)?.sync_all()
    }

    fn index_step(&self, step: IndexStep) -> io::Result<()> {
        self.fail(match step {
            IndexStep::Insert => Step::IndexInsert,
            _ => Step::IndexFlush,
        })
    }
}

#[tokio::test]
async fn a_failure_at_any_fill_step_spares_the_client_and_commits_nothing() {
    for step in [
        Step::Create,
        Step::Write,
        Step::Fsync,
        Step::Rename,
        Step::DirFsync,
        Step::IndexInsert,
        Step::IndexFlush,
    ] {
        let io = Arc::new(FailOnce {
            step,
            armed: AtomicBool::new(true),
        });
        let injected = Arc::clone(&io);
        let server = TestServer::start_with(move |dir| {
            ImageCache::open_with_io(CacheConfig::new(dir), injected).unwrap()
        })
        .await;
        let data = image_data(700_000);
        server.api.add("img", FakeImage::private(data.clone()));
        let id = ImageId::new("img").unwrap();

        let response = server.get("img", OWNER).await;
        assert_eq!(response.status(), 200, "{step:?}");
        assert_eq!(
            response.bytes().await.unwrap(),
            data,
            "{step:?}: the client's bytes"
        );
        server.cache.idle().await;
        assert!(!io.armed.load(Ordering::SeqCst), "{step:?} was reached");
        assert!(!server.cache.is_cached(&id), "{step:?}: nothing committed");
        assert_eq!(
            server.cache_listing(),
            ["cache.db", "incomplete", "invalid"],
            "{step:?}"
        );
        assert!(
            listing(&server.cache_dir().join("incomplete")).is_empty(),
            "{step:?}"
        );

        // The disk recovered: the next download fills the cache.
        assert_eq!(server.get("img", OWNER).await.bytes().await.unwrap(), data);
        server.cache.idle().await;
        assert!(
            server.cache.is_cached(&id),
            "{step:?}: a retry fills the cache"
        );
        assert_eq!(std::fs::read(server.cache_dir().join("img")).unwrap(), data);
    }
}

#[tokio::test]
async fn a_real_full_disk_spares_the_client_and_commits_nothing() {
    let fs = match SmallFs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED a_real_full_disk_...: cannot mount a small tmpfs here ({why})");
            return;
        }
    };
    let cache_dir = fs.path().join("cache");
    let opened = cache_dir.clone();
    let server =
        TestServer::start_with(move |_| ImageCache::open(CacheConfig::new(opened)).unwrap()).await;
    let big = image_data(12 * 1024 * 1024);
    let small = image_data(1024 * 1024);
    server.api.add("big", FakeImage::private(big.clone()));
    server.api.add("small", FakeImage::private(small.clone()));

    // The disk fills up halfway through: the client still gets the whole image.
    let response = server.get("big", OWNER).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), big);
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&ImageId::new("big").unwrap()));
    assert_eq!(listing(&cache_dir), ["cache.db", "incomplete", "invalid"]);
    assert!(listing(&cache_dir.join("incomplete")).is_empty());
    assert!(listing(&cache_dir.join("invalid")).is_empty());

    // The partial file was removed, so an image that fits is cached and served from the cache.
    assert_eq!(
        server.get("small", OWNER).await.bytes().await.unwrap(),
        small
    );
    server.cache.idle().await;
    assert!(server.cache.is_cached(&ImageId::new("small").unwrap()));
    assert_eq!(std::fs::read(cache_dir.join("small")).unwrap(), small);
    let hit = server.get("small", OWNER).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), small);
    assert_eq!(server.api.body_requests(), 2);
}

/// The cache file is written a mebibyte at a time; while the upstream pauses the fill puts
/// what it has in the file for its followers. A disk failing at that write rolls the fill back
/// at once, spares the client and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_while_the_upstream_pauses_spares_every_download() {
    let io = Arc::new(FailOnce {
        step: Step::Write,
        armed: AtomicBool::new(true),
    });
    let injected = Arc::clone(&io);
    let server = Arc::new(
        TestServer::start_with(move |dir| {
            ImageCache::open_with_io(CacheConfig::new(dir), injected).unwrap()
        })
        .await,
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(5)); // 5 chunks of 64 KiB, then a pause
    let data = image_data(3 * 1024 * 1024);
    server.api.add(
        "img",
        FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone())),
    );
    let first = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.get("img", OWNER).await.bytes().await })
    };
    // The first write to the file is the one for the pause: it fails.
    eventually("the write during the pause was tried", || {
        !io.armed.load(Ordering::SeqCst)
    })
    .await;
    // Rolled back while the upstream still pauses (the write's failure is seen a moment before
    // the fill is unregistered and its file removed, on the writer's thread).
    let incomplete = server.cache_dir().join("incomplete");
    eventually("the fill was rolled back during the pause", || {
        server.cache.fills_in_progress().is_empty() && listing(&incomplete).is_empty()
    })
    .await;

    gate.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), data, "the client's bytes");
    server.cache.idle().await;
    assert!(!server.cache.is_cached(&ImageId::new("img").unwrap()));
    assert!(listing(&server.cache_dir().join("incomplete")).is_empty());
    // The disk recovered: the next download fills the cache.
    assert_eq!(server.get("img", OWNER).await.bytes().await.unwrap(), data);
    server.cache.idle().await;
    assert!(server.cache.is_cached(&ImageId::new("img").unwrap()));
}
