//! The store over an index driver that fails or stalls on demand.

use super::*;
use crate::store::memory_driver::{Call, MemoryDriver};

fn open_over(dir: &Path, driver: &MemoryDriver) -> ImageCache {
    ImageCache::open_with_driver(
        CacheConfig::new(dir),
        Arc::new(StdFillIo),
        Box::new(driver.clone()),
    )
    .unwrap()
}

#[test]
fn a_failing_put_commits_nothing_and_a_retry_works() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    driver.fail_once(Call::Put);

    let writer = begin(&cache, "img", b"hello");
    let outcome = writer.outcome();
    let err = writer.finish().unwrap_err();
    assert!(matches!(err, FillError::Index(_)), "{err}");
    assert!(err.to_string().contains("injected"), "{err}");
    // The bytes were right: a reader following the fill still gets them.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(outcome.ended()), FillEnd::Verified);
    // Nothing half recorded: no record, no file, no entry in memory.
    assert!(!cache.is_cached(&id("img")));
    assert_eq!(driver.record(&id("img")), None);
    assert_eq!(names(dir.path()), ["incomplete", "invalid"]);
    assert!(names(&dir.path().join("incomplete")).is_empty());

    let record = begin(&cache, "img", b"hello").finish().unwrap();
    assert_eq!(record.size, 5);
    assert!(cache.is_cached(&id("img")));
    assert_eq!(driver.record(&id("img")).map(|r| r.size), Some(5));
    assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), b"hello");
}

#[test]
fn a_failing_flush_takes_the_record_back() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    driver.fail_once(Call::Flush);

    let err = begin(&cache, "img", b"bytes").finish().unwrap_err();
    assert!(matches!(err, FillError::Index(_)), "{err}");
    assert!(!cache.is_cached(&id("img")));
    assert_eq!(driver.record(&id("img")), None);
    assert!(!dir.path().join("img").exists());

    begin(&cache, "img", b"bytes").finish().unwrap();
    assert!(cache.is_cached(&id("img")));
}

#[tokio::test(flavor = "multi_thread")]
async fn hit_counters_survive_a_failing_flush() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    begin(&cache, "img", b"bytes").finish().unwrap();
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"bytes");

    driver.fail_once(Call::PutAll);
    assert!(cache.flush_hits().is_err());
    assert_eq!(driver.record(&id("img")).map(|r| r.hits), Some(0));
    // Kept for the next flush, not lost.
    cache.flush_hits().unwrap();
    assert_eq!(driver.record(&id("img")).map(|r| r.hits), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_driver_holds_back_no_hit() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    begin(&cache, "cached", b"served while the index stalls")
        .finish()
        .unwrap();

    driver.stall_writes();
    let committing = {
        let writer = begin(&cache, "other", b"waits for the index");
        std::thread::spawn(move || writer.finish())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !driver.is_stalling() {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit never reached the index"
        );
        std::thread::yield_now();
    }
    // The commit is stuck in the driver; hits are answered from memory and the file.
    for _ in 0..3 {
        assert!(cache.is_cached(&id("cached")));
        let mut reader = cache.open_for_read(&id("cached")).unwrap().unwrap();
        assert_eq!(
            read_all(&mut reader).await,
            b"served while the index stalls"
        );
    }
    assert_eq!(cache.cached_images().len(), 1);
    assert!(!committing.is_finished());

    driver.resume();
    committing.join().unwrap().unwrap();
    assert!(cache.is_cached(&id("other")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_copy_found_on_the_hit_path_reaches_the_driver_behind() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    begin(&cache, "img", b"bytes").finish().unwrap();
    std::fs::write(dir.path().join("img"), b"byte").unwrap();

    driver.stall_writes();
    // Found damaged while the driver stalls: forgotten at once, without asking the driver.
    assert!(cache.open_for_read(&id("img")).unwrap().is_none());
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert!(driver.record(&id("img")).is_some(), "not yet written");
    driver.resume();
    cache.flush_hits().unwrap();
    assert_eq!(driver.record(&id("img")), None);

    // Forgotten, then committed again before the flush: the new record stays.
    begin(&cache, "img", b"bytes").finish().unwrap();
    std::fs::write(dir.path().join("img"), b"byte").unwrap();
    assert!(cache.open_for_read(&id("img")).unwrap().is_none());
    begin(&cache, "img", b"bytes").finish().unwrap();
    cache.flush_hits().unwrap();
    assert_eq!(driver.record(&id("img")).map(|r| r.size), Some(5));
    assert!(cache.is_cached(&id("img")));
}

#[test]
fn the_health_check_asks_the_index_for_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let driver = MemoryDriver::default();
    let cache = open_over(dir.path(), &driver);
    cache.check_health().unwrap();
    driver.fail_once(Call::Probe);
    let err = cache.check_health().unwrap_err();
    assert!(err.to_string().contains("the cache index failed"), "{err}");
    cache.check_health().unwrap();
    // The probe leaves nothing in the cache directory.
    assert!(names(&dir.path().join("incomplete")).is_empty());
}
