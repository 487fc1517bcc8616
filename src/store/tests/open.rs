//! Opening the cache: reconcile, a corrupted or held index, the database name, closing.

use super::*;

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
    let kept = cache.cached_image(&id("kept")).unwrap();
    assert!(
        adopted.id != 0 && adopted.id != kept.id,
        "an adopted file gets a row id of its own: {} beside {}",
        adopted.id,
        kept.id
    );
    let mut reader = cache.open_for_read(&id("kept")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"kept bytes");
    assert!(
        !dir.path().join("incomplete/partial").exists(),
        "reclaimed at open: nothing can finish it"
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

#[test]
fn fills_left_by_a_stopped_process_are_reclaimed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    // A process stopped mid-fill: its partial files are still in incomplete/, however fresh.
    std::fs::write(dir.path().join("incomplete/half"), vec![1u8; 1000]).unwrap();
    std::fs::write(dir.path().join("incomplete/other"), b"x").unwrap();

    let cache = open(dir.path());
    assert!(names(&dir.path().join("incomplete")).is_empty());
    assert!(!cache.is_cached(&id("half")));
    // Nothing is left for the cleaner.
    let cleaned = cache.clean().unwrap();
    assert_eq!((cleaned.invalid_removed, cleaned.stalled_removed), (0, 0));
    // A fill of the same image starts afresh.
    fill(&cache, "half", b"whole");
    assert!(cache.is_cached(&id("half")));
}

#[test]
fn the_health_check_writes_the_sled_index_and_leaves_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    cache.check_health().unwrap();
    cache.check_health().unwrap();
    assert!(cache.cached_images().is_empty());
    assert!(cache.queued_images().unwrap().is_empty());
    drop(cache);
    // Nothing for reconcile to adopt or drop.
    assert!(open(dir.path()).cached_images().is_empty());
}
