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
    crate::store::chunks::CHUNK_SIZE
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

#[test]
fn pooled_chunks_hold_the_right_bytes_and_only_a_few_buffers_stay() {
    use crate::store::chunks::{ChunkPool, CHUNK_SIZE};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let data: Vec<u8> = (0..3 * CHUNK_SIZE).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let pool = Arc::new(ChunkPool::default());

    // Many chunks alive at once (a spike), each with its own bytes.
    let chunks: Vec<_> = (0..40)
        .map(|i| {
            let at = (i * 4099) as u64;
            (at, pool.read_next(&file, at, CHUNK_SIZE as u64).unwrap())
        })
        .collect();
    assert_eq!(pool.idle(), 0);
    for (at, chunk) in &chunks {
        assert_eq!(&chunk[..], &data[*at as usize..*at as usize + CHUNK_SIZE]);
    }
    // Sent: the pool keeps a few buffers and unmaps the rest.
    drop(chunks);
    let kept = pool.idle();
    assert!(kept > 0 && kept < 40, "kept {kept} idle buffers");

    // A reused buffer holds the new read only, its length exactly what was asked.
    let tail = pool.read_next(&file, 5, 10).unwrap();
    assert_eq!(&tail[..], &data[5..15]);
    assert_eq!(pool.idle(), kept - 1);
    drop(tail);
    assert_eq!(pool.idle(), kept);

    // A read past the end is an error, never a short chunk.
    let past = pool.read_next(&file, data.len() as u64 - 3, 10);
    assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_small_image_is_kept_in_memory_after_its_first_hit_and_goes_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"small bytes");
    let generation = cache.inner.catalog.get(&id("img")).unwrap().generation;
    assert!(cache.inner.small.get(&id("img"), generation).is_none());
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"small bytes");
    let kept = cache.inner.small.get(&id("img"), generation);
    assert_eq!(kept.as_deref(), Some(&b"small bytes"[..]));

    // Served from memory while the file is away: the open reads no file.
    let moved = dir.path().join("moved");
    std::fs::rename(dir.path().join("img"), &moved).unwrap();
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    assert_eq!(read_all(&mut reader).await, b"small bytes");
    std::fs::rename(&moved, dir.path().join("img")).unwrap();

    assert!(cache.delete_cached_image(&id("img")).unwrap());
    assert!(cache.inner.small.get(&id("img"), generation).is_none());
    assert!(cache.open_for_read(&id("img")).unwrap().is_none());
}

const MIB: usize = 1024 * 1024;

/// A committed image of `len` bytes, written a mebibyte at a time, and its bytes.
fn fill_large(cache: &ImageCache, image: &str, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let expected = Expected::default().size(len as u64).md5_hex(md5_hex(&data));
    let mut writer = cache.begin_fill(&id(image), expected).unwrap();
    for chunk in data.chunks(MIB) {
        writer.write(chunk).unwrap();
    }
    writer.finish().unwrap();
    data
}

/// The chunks of a checked read, until its end or its first error.
async fn read_checked(reader: &mut CheckedReader) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(err) => return (out, Some(err)),
        }
    }
    (out, None)
}

/// A checked read of a committed image, `None` (after printing why) where the file system keeps
/// no user attributes, so the fill kept no sums.
fn open_checked(cache: &ImageCache, image: &str) -> Option<CheckedReader> {
    let reader = cache.open_checked(&id(image)).unwrap().unwrap();
    if !reader.is_checked() {
        println!("SKIPPED: the temporary directory's file system keeps no user attributes");
        return None;
    }
    Some(reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_read_hands_out_the_image_from_any_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data = fill_large(&cache, "img", 3 * MIB + 5);
    let Some(mut whole) = open_checked(&cache, "img") else {
        return;
    };
    assert_eq!(whole.remaining(), data.len() as u64);
    let (read, failed) = read_checked(&mut whole).await;
    assert!(failed.is_none());
    assert!(read == data, "the whole image");
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 1);

    // From the middle of a block: that block is read and checked whole, and handed out from
    // the byte asked.
    for from in [1, MIB + MIB / 2, 3 * MIB, 3 * MIB + 4, 3 * MIB + 5] {
        let mut part = open_checked(&cache, "img")
            .unwrap()
            .starting_at(from as u64);
        assert_eq!(part.remaining(), (data.len() - from) as u64);
        let (read, failed) = read_checked(&mut part).await;
        assert!(failed.is_none());
        assert!(read == data[from..], "from byte {from}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_block_is_never_handed_out_and_the_copy_is_removed() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data = fill_large(&cache, "img", 3 * MIB + 5);
    if open_checked(&cache, "img").is_none() {
        return;
    }
    // One byte of the third block changes on the disk (the file, its length and its
    // attributes stay).
    let path = dir.path().join("img");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[data[2 * MIB + 3] ^ 0x40], (2 * MIB + 3) as u64)
        .unwrap();
    drop(file);

    let mut reader = open_checked(&cache, "img").unwrap().starting_at(10);
    let (read, failed) = read_checked(&mut reader).await;
    assert!(
        read == data[10..2 * MIB],
        "the sound blocks before it, whole"
    );
    let failed = failed.expect("the read ends at the rotten block");
    assert_eq!(failed.kind(), io::ErrorKind::InvalidData);
    let text = failed.to_string();
    assert!(
        text.contains("Bytes 2097152-3145727 of this node's copy of image img"),
        "{text}"
    );
    assert!(!path.exists(), "the rotten copy left the disk");
    assert!(!cache.is_cached(&id("img")), "and the index");
    assert_eq!(cache.cached_image(&id("img")), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_without_sums_is_read_whole_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data = fill_large(&cache, "img", 5 * MIB + 1);
    if open_checked(&cache, "img").is_none() {
        return;
    }
    let file = std::fs::File::open(dir.path().join("img")).unwrap();
    rustix::fs::fremovexattr(&file, "user.tower_image_cache.crc32").unwrap();
    let mut reader = cache.open_checked(&id("img")).unwrap().unwrap();
    assert!(!reader.is_checked());
    let (read, failed) = read_checked(&mut reader).await;
    assert!(failed.is_none());
    assert!(read == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_its_next_chunk_while_the_last_one_is_sent() {
    use crate::store::chunks::CHUNK_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data = fill_large(&cache, "img", 3 * CHUNK_SIZE + 5);
    let chunks = std::sync::Arc::clone(&cache.inner.chunks);
    let mut reader = cache.open_for_read(&id("img")).unwrap().unwrap();
    let first = reader.next_chunk().await.unwrap().unwrap();
    assert!(first == data[..CHUNK_SIZE]);
    // The chunk handed out, and the next one being read already.
    for _ in 0..200 {
        if chunks.in_flight() == 2 * CHUNK_SIZE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        chunks.in_flight(),
        2 * CHUNK_SIZE,
        "one chunk read ahead, no more"
    );
    drop(first);
    let mut rest = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(rest == data[CHUNK_SIZE..]);
    assert_eq!(chunks.in_flight(), 0, "every chunk went back");
    assert_eq!(cache.cached_image(&id("img")).unwrap().hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_read_of_a_file_of_another_size_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill_large(&cache, "img", 2 * MIB);
    let path = dir.path().join("img");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIB as u64)
        .unwrap();
    assert!(cache.open_checked(&id("img")).unwrap().is_none());
    assert!(!path.exists(), "not the bytes that were verified");
    assert!(!cache.is_cached(&id("img")));
}
