//! A fault at each file step of a fill, through the layer: the client still gets every byte,
//! nothing is committed, and a later download fills the cache.

mod common;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use tower_image_cache::store::FillIo;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Create,
    Write,
    Fsync,
    Rename,
    DirFsync,
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
}

#[tokio::test]
async fn a_failure_at_any_fill_step_spares_the_client_and_commits_nothing() {
    for step in [
        Step::Create,
        Step::Write,
        Step::Fsync,
        Step::Rename,
        Step::DirFsync,
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
