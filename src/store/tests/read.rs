//! Reading committed images: hit counting, evicted and replaced copies.

use super::*;

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
    crate::store::read::CHUNK_SIZE
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
