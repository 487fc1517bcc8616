//! Prune, clean, the limit, the queue and eviction.

use super::*;

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
