use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use md5::Digest;

use super::*;
use crate::{CacheConfig, ImageId};

fn id(s: &str) -> ImageId {
    ImageId::new(s).unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn open(dir: &Path) -> ImageCache {
    ImageCache::open(CacheConfig::new(dir)).unwrap()
}

fn fill(cache: &ImageCache, image: &str, data: &[u8]) -> CachedImage {
    let mut writer = cache
        .begin_fill(
            &id(image),
            Expected::default()
                .size(data.len() as u64)
                .md5_hex(md5_hex(data)),
        )
        .unwrap();
    for chunk in data.chunks(7) {
        writer.write(chunk).unwrap();
    }
    writer.finish().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

async fn read_all(reader: &mut ImageReader) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[test]
fn open_creates_the_layout_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"some bytes");
    assert_eq!(
        names(dir.path()),
        ["cache.db", "img", "incomplete", "invalid"]
    );
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_verified_fill_is_committed_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let record = fill(&cache, "img", b"hello world");
    assert_eq!(record.size, 11);
    assert_eq!(record.hits, 0);
    assert_eq!(record.last_accessed, record.last_modified);
    assert_eq!(
        record.checksum.as_deref(),
        Some(md5_hex(b"hello world").as_str())
    );
    assert!(cache.is_cached(&id("img")));
    assert_eq!(
        std::fs::read(dir.path().join("img")).unwrap(),
        b"hello world"
    );
    assert_eq!(cache.size(), 11);
    assert_eq!(cache.cached_images(), vec![record]);
}

#[test]
fn checksum_mismatch_moves_the_file_to_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache
        .begin_fill(&id("img"), Expected::default().md5_hex(md5_hex(b"other")))
        .unwrap();
    writer.write(b"data").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "md5", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert_eq!(
        std::fs::read(dir.path().join("invalid/img")).unwrap(),
        b"data"
    );
    assert!(!dir.path().join("incomplete/img").exists());
}

#[test]
fn wrong_length_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache
        .begin_fill(&id("img"), Expected::default().size(10))
        .unwrap();
    writer.write(b"short").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "size", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("img")));
    assert!(dir.path().join("invalid/img").exists());
}

#[test]
fn sha512_is_verified_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let good = hex::encode(sha2::Sha512::digest(b"data"));
    let mut writer = cache
        .begin_fill(
            &id("good"),
            Expected::default().sha512_hex(good.to_uppercase()),
        )
        .unwrap();
    writer.write(b"data").unwrap();
    writer.finish().unwrap();
    assert!(cache.is_cached(&id("good")));

    let bad = hex::encode(sha2::Sha512::digest(b"atad"));
    let mut writer = cache
        .begin_fill(&id("bad"), Expected::default().sha512_hex(bad))
        .unwrap();
    writer.write(b"data").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "sha512", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("bad")));
}

#[test]
fn a_dropped_fill_rolls_back_and_frees_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"part").unwrap();
    assert!(cache.is_filling(&id("img")));
    assert_eq!(
        cache.fills_in_progress(),
        vec![FillProgress {
            image_id: id("img"),
            bytes_written: 4,
            expected_size: None
        }]
    );
    drop(writer);
    assert!(!cache.is_filling(&id("img")));
    assert!(!cache.is_cached(&id("img")));
    assert!(dir.path().join("invalid/img").exists());
    assert!(!dir.path().join("incomplete/img").exists());
    fill(&cache, "img", b"whole");
    assert!(cache.is_cached(&id("img")));
}

#[test]
fn only_one_fill_per_image_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let _first = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    let second = cache.begin_fill(&id("img"), Expected::default());
    assert!(matches!(second, Err(FillError::AlreadyFilling)));
    assert!(cache.begin_fill(&id("other"), Expected::default()).is_ok());
}

#[test]
fn a_cached_image_is_not_filled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"x");
    assert!(matches!(
        cache.begin_fill(&id("img"), Expected::default()),
        Err(FillError::AlreadyCached)
    ));
}

#[test]
fn an_image_larger_than_the_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(10)).unwrap();
    let err = cache
        .begin_fill(&id("img"), Expected::default().size(11))
        .unwrap_err();
    assert!(matches!(
        err,
        FillError::TooLarge {
            size: 11,
            max_size: 10
        }
    ));
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_delete_during_a_fill_stops_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"part").unwrap();
    assert!(!cache.delete_cached_image(&id("img")).unwrap());
    assert!(matches!(writer.finish(), Err(FillError::Cancelled)));
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert!(!dir.path().join("incomplete/img").exists());
}

#[test]
fn delete_removes_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "a", b"aaa");
    fill(&cache, "b", b"bbb");
    assert!(cache.delete_cached_image(&id("a")).unwrap());
    assert!(!cache.delete_cached_image(&id("a")).unwrap());
    assert!(!dir.path().join("a").exists());
    assert_eq!(cache.delete_all_cached_images().unwrap(), 1);
    assert!(cache.cached_images().is_empty());
    assert_eq!(names(dir.path()), ["cache.db", "incomplete", "invalid"]);
    drop(cache);
    assert!(open(dir.path()).cached_images().is_empty());
}

#[tokio::test]
async fn a_hit_counts_only_when_the_whole_image_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data: Vec<u8> = (0..3 * reader_chunk() + 5).map(|i| i as u8).collect();
    fill(&cache, "img", &data);

    let mut partial = cache.open_for_read(&id("img")).unwrap().unwrap();
    partial.next_chunk().await.unwrap().unwrap();
    drop(partial);
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 0);

    let mut whole = cache.open_for_read(&id("img")).unwrap().unwrap();
    assert_eq!(read_all(&mut whole).await, data);
    let record = cache.cached_image(&id("img")).unwrap();
    assert_eq!(record.hits, 1);
    assert!(record.last_accessed >= record.last_modified);
}

fn reader_chunk() -> usize {
    read::CHUNK_SIZE
}

#[tokio::test]
async fn hits_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"abc");
    for _ in 0..3 {
        let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
        read_all(&mut reader).await;
    }
    drop(cache);
    let cache = open(dir.path());
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 3);
}

#[tokio::test]
async fn a_reader_keeps_an_evicted_image_readable() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"still here");
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    cache.delete_cached_image(&id("img")).unwrap();
    assert_eq!(read_all(&mut reader).await, b"still here");
    assert!(cache.open_for_read(&id("img")).unwrap().is_none());
    // The hit of an image deleted meanwhile does not bring it back.
    assert!(cache.cached_image(&id("img")).is_none());
}

#[tokio::test]
async fn a_read_of_an_old_copy_does_not_count_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"first copy");
    let mut old = cache.open_for_read(&id("img")).unwrap().unwrap();
    cache.delete_cached_image(&id("img")).unwrap();
    fill(&cache, "img", b"second copy");
    assert_eq!(read_all(&mut old).await, b"first copy");
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 0);
}

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
    let err = writer.write(b"second").unwrap_err();
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

#[tokio::test]
async fn reopen_reconciles_index_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "kept", b"kept bytes");
    fill(&cache, "lost-file", b"gone");
    fill(&cache, "resized", b"original");
    drop(cache);

    // What a crash can leave: a stray partial fill, an entry whose file vanished, a committed
    // file the index never heard of, and a file that no longer matches its entry.
    std::fs::write(dir.path().join("incomplete/partial"), b"half").unwrap();
    std::fs::remove_file(dir.path().join("lost-file")).unwrap();
    std::fs::write(
        dir.path().join("adopted"),
        b"renamed before the index write",
    )
    .unwrap();
    std::fs::write(dir.path().join("resized"), b"truncat").unwrap();

    let cache = open(dir.path());
    let mut ids: Vec<String> = cache
        .cached_images()
        .into_iter()
        .map(|r| r.image_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["adopted", "kept"]);
    assert!(!cache.is_cached(&id("partial")));
    assert!(cache.open_for_read(&id("partial")).unwrap().is_none());
    assert!(!dir.path().join("resized").exists());
    let adopted = cache.cached_image(&id("adopted")).unwrap();
    assert_eq!(adopted.size, 30);
    assert_eq!(adopted.hits, 0);
    let mut reader = cache.open_for_read(&id("kept")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"kept bytes");
    assert!(
        dir.path().join("incomplete/partial").exists(),
        "left for the cleaner"
    );
    drop(reader);
    drop(cache);

    // The reconciled state was written back.
    let cache = open(dir.path());
    assert_eq!(cache.cached_images().len(), 2);
}

#[tokio::test]
async fn a_corrupted_index_is_moved_aside_and_rebuilt_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"verified bytes");
    drop(cache);

    let db = dir.path().join("cache.db");
    for entry in std::fs::read_dir(&db).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, vec![0xA5; 4096]).unwrap();
        }
    }

    let cache = open(dir.path());
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"verified bytes");
    assert_eq!(
        names(dir.path()),
        ["cache.db", "img", "incomplete", "invalid"]
    );
    let aside = names(&dir.path().join("invalid"));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].starts_with("cache.db.corrupt-"), "{aside:?}");
}

#[test]
fn a_database_held_by_another_handle_is_an_error_not_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"x");
    let held = ImageCache::open(CacheConfig::new(dir.path())).unwrap_err();
    assert!(held.is_locked(), "{held}");
    assert!(
        held.to_string().contains("held by another process"),
        "{held}"
    );
    assert!(cache.is_cached(&id("img")));
    assert!(names(&dir.path().join("invalid")).is_empty());
}

#[test]
fn a_database_name_that_is_a_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["../elsewhere", "a/b", "", "invalid", ".."] {
        let config = CacheConfig::new(dir.path()).image_cache_sqlite_db(name);
        assert!(
            matches!(ImageCache::open(config), Err(StoreError::InvalidConfig(_))),
            "{name}"
        );
    }
    assert!(!dir.path().parent().unwrap().join("elsewhere").exists());
    let config = CacheConfig::new(dir.path()).image_cache_sqlite_db("glance.db");
    ImageCache::open(config).unwrap();
    assert!(dir.path().join("glance.db").is_dir());
}

fn fill_at(cache: &ImageCache, image: &str, len: usize) {
    fill(cache, image, &vec![b'x'; len]);
}

#[tokio::test]
async fn prune_removes_the_least_recently_accessed_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(u64::MAX)).unwrap();
    for n in 0..6 {
        fill_at(&cache, &format!("img{n}"), 1000);
    }
    // Read in the order 3, 0, 5, 1, 4, 2: 3 is now the least recently accessed.
    for n in [3, 0, 5, 1, 4, 2] {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut reader = cache
            .open_for_read(&id(&format!("img{n}")))
            .unwrap()
            .unwrap();
        read_all(&mut reader).await;
    }
    drop(cache);
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(3500)).unwrap();
    let pruned = cache.prune().unwrap();
    assert_eq!(
        pruned,
        Pruned {
            total_files_pruned: 3,
            total_bytes_pruned: 3000
        }
    );
    let mut left: Vec<String> = cache
        .cached_images()
        .into_iter()
        .map(|r| r.image_id)
        .collect();
    left.sort();
    assert_eq!(left, ["img1", "img2", "img4"]);
    assert!(
        !dir.path().join("img3").exists()
            && !dir.path().join("img0").exists()
            && !dir.path().join("img5").exists()
    );
    assert_eq!(cache.prune().unwrap(), Pruned::default());
}

#[test]
fn prune_to_zero_empties_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    fill_at(&open(dir.path()), "a", 10);
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(0)).unwrap();
    assert_eq!(
        cache.prune().unwrap(),
        Pruned {
            total_files_pruned: 1,
            total_bytes_pruned: 10
        }
    );
    assert_eq!(cache.size(), 0);
}

#[test]
fn a_commit_over_the_limit_prunes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(2500)).unwrap();
    for n in 0..5 {
        fill_at(&cache, &format!("img{n}"), 1000);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cache.size() > 2500 {
        assert!(
            std::time::Instant::now() < deadline,
            "never pruned: {} bytes",
            cache.size()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut left: Vec<String> = cache
        .cached_images()
        .into_iter()
        .map(|r| r.image_id)
        .collect();
    left.sort();
    assert_eq!(left, ["img3", "img4"]);
}

#[test]
fn a_fill_of_unknown_size_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(10)).unwrap();
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"0123456789").unwrap();
    assert!(matches!(
        writer.write(b"x"),
        Err(FillError::TooLarge {
            size: 11,
            max_size: 10
        })
    ));
    drop(writer);
    assert!(names(&dir.path().join("incomplete")).is_empty());
    assert!(names(&dir.path().join("invalid")).is_empty());
}

#[test]
fn clean_reaps_invalid_and_stalled_fills_but_not_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(
        CacheConfig::new(dir.path()).image_cache_stall_time(std::time::Duration::from_secs(86_400)),
    )
    .unwrap();
    std::fs::write(dir.path().join("invalid/bad"), b"bad").unwrap();
    std::fs::create_dir(dir.path().join("invalid/cache.db.corrupt-1")).unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    let stalled = dir.path().join("incomplete/stalled");
    std::fs::write(&stalled, b"old").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stalled)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    std::fs::write(dir.path().join("incomplete/fresh"), b"new").unwrap();
    let mut running = cache
        .begin_fill(&id("running"), Expected::default())
        .unwrap();
    running.write(b"still going").unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("incomplete/running"))
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    assert_eq!(
        cache.clean().unwrap(),
        Cleaned {
            invalid_removed: 2,
            stalled_removed: 1
        }
    );
    assert!(names(&dir.path().join("invalid")).is_empty());
    assert_eq!(names(&dir.path().join("incomplete")), ["fresh", "running"]);
    running.finish().unwrap();
    assert!(cache.is_cached(&id("running")));
}

#[test]
fn the_queue_is_fifo_without_duplicates_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    for image in ["c", "a", "b", "a"] {
        cache.queue_image(&id(image)).unwrap();
    }
    fill(&cache, "cached", b"x");
    assert!(!cache.queue_image(&id("cached")).unwrap());
    assert_eq!(cache.queued_images().unwrap(), [id("c"), id("a"), id("b")]);
    assert!(cache.is_queued(&id("a")).unwrap());
    assert!(!cache.is_queued(&id("cached")).unwrap());
    assert!(cache.delete_queued_image(&id("a")).unwrap());
    assert!(!cache.delete_queued_image(&id("a")).unwrap());
    drop(cache);
    let cache = open(dir.path());
    assert_eq!(cache.queued_images().unwrap(), [id("c"), id("b")]);
    assert_eq!(cache.delete_all_queued_images().unwrap(), 2);
    assert!(cache.queued_images().unwrap().is_empty());
}

#[test]
fn evict_forgets_cache_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "a", b"x");
    cache.queue_image(&id("b")).unwrap();
    assert!(cache.evict(&id("a")).unwrap());
    assert!(cache.evict(&id("b")).unwrap());
    assert!(!cache.evict(&id("c")).unwrap());
    assert!(cache.cached_images().is_empty() && cache.queued_images().unwrap().is_empty());
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

#[test]
fn dropping_the_last_handle_frees_the_directory_at_once() {
    // A commit over the limit wakes the background thread to prune: it holds the cache while
    // it works. Dropping the last handle then must still close the cache before returning.
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::new(dir.path()).image_cache_max_size(10);
    for round in 0..50 {
        let cache = ImageCache::open(config.clone()).unwrap();
        fill(&cache, &format!("a{round}"), b"eight by");
        fill(&cache, &format!("b{round}"), b"eight by");
        drop(cache);
        if let Err(err) = ImageCache::open(config.clone()) {
            panic!("round {round}: the directory is still held after the last handle was dropped: {err:?}");
        }
    }
}

mod over_a_failing_driver {
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

    fn begin(cache: &ImageCache, image: &str, data: &[u8]) -> FillWriter {
        let mut writer = cache
            .begin_fill(
                &id(image),
                Expected::default()
                    .size(data.len() as u64)
                    .md5_hex(md5_hex(data)),
            )
            .unwrap();
        writer.write(data).unwrap();
        writer
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

        driver.stall_puts();
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
}
