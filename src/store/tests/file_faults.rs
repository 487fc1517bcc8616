//! Fills whose file steps fail, and cached files that changed on disk.

use super::*;

/// Fails the write step after `allow` successful writes, as a full disk does.
struct FullDisk {
    full: AtomicBool,
}

impl FillIo for FullDisk {
    fn write(&self, file: &mut std::fs::File, buf: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        std::io::Write::write_all(file, buf)
    }
}

#[test]
fn a_failing_write_removes_the_partial_file_and_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FullDisk {
        full: AtomicBool::new(false),
    });
    let cache = ImageCache::open_with_io(CacheConfig::new(dir.path()), io.clone()).unwrap();
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"first").unwrap();
    io.full.store(true, Ordering::SeqCst);
    // The file is written a block (1 MiB) at a time where it takes direct I/O: the write of
    // the block that fills up fails.
    let err = writer.write(&vec![7u8; 2 << 20]).unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Io {
                step: FillStep::Write,
                ..
            }
        ),
        "{err}"
    );
    assert!(writer.write(b"third").is_err());
    assert!(writer.finish().is_err());
    assert!(!cache.is_cached(&id("img")));
    assert!(names(&dir.path().join("incomplete")).is_empty());
    assert!(names(&dir.path().join("invalid")).is_empty());

    io.full.store(false, Ordering::SeqCst);
    fill(&cache, "img", b"retry");
    assert!(cache.is_cached(&id("img")));
}

struct FailingRename;

impl FillIo for FailingRename {
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(io::Error::other("injected rename failure"))
    }
}

#[test]
fn a_failing_rename_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        ImageCache::open_with_io(CacheConfig::new(dir.path()), Arc::new(FailingRename)).unwrap();
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"data").unwrap();
    assert!(matches!(
        writer.finish(),
        Err(FillError::Io {
            step: FillStep::Rename,
            ..
        })
    ));
    assert!(!cache.is_cached(&id("img")));
    assert_eq!(names(dir.path()), ["cache.db", "incomplete", "invalid"]);
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

struct FailingCreate;

impl FillIo for FailingCreate {
    fn create(&self, _: &Path) -> io::Result<std::fs::File> {
        Err(io::Error::from_raw_os_error(13)) // EACCES
    }
}

#[test]
fn a_failing_create_starts_no_fill_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        ImageCache::open_with_io(CacheConfig::new(dir.path()), Arc::new(FailingCreate)).unwrap();
    let err = cache
        .begin_fill(&id("img"), Expected::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Io {
                step: FillStep::Create,
                ..
            }
        ),
        "{err}"
    );
    assert!(!cache.is_filling(&id("img")));
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_cached_file_whose_size_changed_on_disk_is_dropped_not_read() {
    // Small images are read whole at open; larger ones are streamed: both check the length.
    for size in [100, 200_000] {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path());
        let data = vec![3u8; size];
        for (change, what) in [(1i64, "grown"), (-1, "shrunk")] {
            fill(&cache, "img", &data);
            let path = dir.path().join("img");
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len((size as i64 + change) as u64).unwrap();
            assert!(
                cache.open_for_read(&id("img")).unwrap().is_none(),
                "{size} bytes, {what}"
            );
            assert!(!cache.is_cached(&id("img")), "{size} bytes, {what}");
            assert!(!path.exists(), "{size} bytes, {what}: removed");
        }
        // The next fill caches it afresh.
        fill(&cache, "img", &data);
        assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data);
    }
}

/// A fill of `img` expecting `data`, with a follower that joined after its first bytes; all of
/// `data` written, not yet finished.
fn followed_fill(cache: &ImageCache, data: &[u8]) -> (FillWriter, FillFollower) {
    let expected = Expected::default()
        .size(data.len() as u64)
        .md5_hex(md5_hex(data));
    let mut writer = cache.begin_fill(&id("img"), expected).unwrap();
    writer.write(&data[..10]).unwrap();
    let follower = cache.follow(&id("img")).unwrap().unwrap();
    writer.write(&data[10..]).unwrap();
    (writer, follower)
}

/// Everything `follower` hands out, to its end.
async fn read_followed(follower: &mut FillFollower) -> Vec<u8> {
    let mut read = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| follower.poll_chunk(cx)).await {
        read.extend_from_slice(&chunk.unwrap());
    }
    read
}

struct FailingFsync;

impl FillIo for FailingFsync {
    fn sync_file(&self, _: &std::fs::File) -> io::Result<()> {
        Err(io::Error::other("injected fsync failure"))
    }
}

/// The bytes were verified before the fsync failed: a reader following the fill gets the whole
/// image (from its open file, though the file is removed), and nothing is committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_of_a_fill_whose_fsync_fails_after_verification_reads_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        ImageCache::open_with_io(CacheConfig::new(dir.path()), Arc::new(FailingFsync)).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    let (writer, mut follower) = followed_fill(&cache, &data);
    let outcome = writer.outcome();
    assert!(matches!(
        writer.finish(),
        Err(FillError::Io {
            step: FillStep::Fsync,
            ..
        })
    ));
    assert_eq!(outcome.verdict().await, FillEnd::Verified);
    let read = read_followed(&mut follower).await;
    assert!(read == data, "the follower read {} bytes", read.len());
    assert!(!cache.is_cached(&id("img")));
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

/// An fsync that waits until the test lets it go.
struct HeldFsync(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl FillIo for HeldFsync {
    fn sync_file(&self, file: &std::fs::File) -> io::Result<()> {
        let _ = self.0.lock().unwrap().recv();
        file.sync_all()
    }
}

/// The last byte waits for the digest only: a follower has the whole image while the commit's
/// fsync of the file is still running; the commit then completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_gets_the_last_byte_before_the_fsync_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (release, held) = std::sync::mpsc::channel();
    let io = Arc::new(HeldFsync(std::sync::Mutex::new(held)));
    let cache = ImageCache::open_with_io(CacheConfig::new(dir.path()), io).unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 247) as u8).collect();
    let (writer, mut follower) = followed_fill(&cache, &data);
    let finishing = tokio::task::spawn_blocking(move || writer.finish());
    let reading = read_followed(&mut follower);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), reading)
        .await
        .expect("the follower's last byte waited for the fsync");
    assert!(read == data, "the follower read {} bytes", read.len());
    assert!(
        !finishing.is_finished(),
        "the fsync was held, yet the fill ended"
    );
    assert!(!cache.is_cached(&id("img")));
    release.send(()).unwrap();
    let record = finishing.await.unwrap().unwrap();
    assert_eq!(record.size, data.len() as u64);
    assert!(cache.is_cached(&id("img")));
}
