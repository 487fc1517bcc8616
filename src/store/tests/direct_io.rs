//! Fills written with direct I/O: whole aligned blocks, the tail buffered, a file system that
//! refuses direct writes, and the pages a pausing fill puts in the file for its followers.

use std::sync::Mutex;

use rustix::fs::{fcntl_getfl, OFlags};

use super::*;

/// Records each write's length and whether the file had `O_DIRECT` on; refuses direct writes
/// with `EINVAL` when `refuse_direct` is set, as a file system without direct I/O does.
#[derive(Default)]
struct Recording {
    writes: Mutex<Vec<(usize, bool)>>,
    refuse_direct: bool,
}

impl FillIo for Recording {
    fn write(&self, file: &mut std::fs::File, buf: &[u8]) -> io::Result<()> {
        let direct = fcntl_getfl(&*file)?.contains(OFlags::DIRECT);
        self.writes.lock().unwrap().push((buf.len(), direct));
        if direct && self.refuse_direct {
            return Err(io::Error::from_raw_os_error(22)); // EINVAL
        }
        std::io::Write::write_all(file, buf)
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn sha512_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha512::digest(data))
}

/// Fills `data` in uneven chunks, verified by its SHA-512; returns the writes seen.
fn fill_recorded(dir: &Path, io: Arc<Recording>, data: &[u8]) -> Vec<(usize, bool)> {
    let cache = ImageCache::open_with_io(CacheConfig::new(dir), io.clone()).unwrap();
    let expected = Expected::default()
        .size(data.len() as u64)
        .sha512_hex(sha512_hex(data));
    let mut writer = cache.begin_fill(&id("img"), expected).unwrap();
    for chunk in data.chunks(65_521) {
        writer.write(chunk).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!(std::fs::read(dir.join("img")).unwrap(), data);
    let writes = io.writes.lock().unwrap().clone();
    writes
}

#[test]
fn an_image_of_uneven_length_goes_to_the_disk_in_aligned_blocks_and_a_buffered_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((3 << 20) + 4097);
    let writes = fill_recorded(dir.path(), Arc::default(), &data);
    let direct: Vec<usize> = writes.iter().filter(|w| w.1).map(|w| w.0).collect();
    if direct.is_empty() {
        eprintln!("SKIPPED: the temporary directory's file system takes no direct I/O");
        return;
    }
    assert_eq!(direct, vec![1 << 20; 3], "{writes:?}");
    assert_eq!(writes.last(), Some(&(4097, false)), "{writes:?}");
}

#[test]
fn a_file_system_refusing_direct_writes_gets_the_fill_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((2 << 20) + 100);
    let io = Arc::new(Recording {
        refuse_direct: true,
        ..Recording::default()
    });
    let writes = fill_recorded(dir.path(), io, &data);
    // At most the one refused direct write; everything after it buffered.
    assert!(writes.iter().skip(1).all(|w| !w.1), "{writes:?}");
    let buffered: usize = writes.iter().filter(|w| !w.1).map(|w| w.0).sum();
    assert_eq!(buffered, data.len(), "{writes:?}");
}

#[tokio::test]
async fn a_flush_puts_the_whole_pages_in_the_file_for_followers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let data = pattern(3 * 4096 + 10);
    let expected = Expected::default().size(2 << 20);
    let mut writer = cache.begin_fill(&id("img"), expected).unwrap();
    writer.write(&data).unwrap();
    let on_disk = || {
        std::fs::metadata(dir.path().join("incomplete/img"))
            .unwrap()
            .len()
    };
    // What is gathered for the next block counts as taken, though not in the file yet.
    assert_eq!(
        cache.fills_in_progress()[0].bytes_written,
        data.len() as u64
    );
    if on_disk() == 0 {
        assert!(writer.has_unflushed());
        writer.flush().unwrap();
        assert!(!writer.has_unflushed(), "less than a page stays gathered");
    }
    assert!(on_disk() >= 3 * 4096, "{}", on_disk());
    let mut follower = cache.follow(&id("img")).unwrap().unwrap();
    let mut got = Vec::new();
    while got.len() < 3 * 4096 {
        let chunk = std::future::poll_fn(|cx| follower.poll_chunk(cx)).await;
        got.extend_from_slice(&chunk.unwrap().unwrap());
    }
    assert_eq!(got, data[..got.len()]);
    drop(writer);
}

/// A follower at the writer's heels takes the writer's own chunks from memory, not the file's
/// bytes (the file holds zeros under it here, as nothing else could make it, and the follower
/// still gets what was written); a follower that joins later reads what the window no longer
/// holds from the file, and the rest from memory.
#[tokio::test]
async fn a_follower_at_the_writers_heels_takes_its_chunks_from_memory() {
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mib = 1 << 20;
    let data = pattern(super::super::recent::RECENT_BYTES + 4 * mib);
    let expected = Expected::default().size(data.len() as u64);
    let mut writer = cache.begin_fill(&id("img"), expected).unwrap();
    let mut early = cache.follow(&id("img")).unwrap().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("incomplete/img"))
        .unwrap();
    let zeros = vec![0u8; mib];
    let mut got = Vec::new();
    for (i, part) in data.chunks(mib).enumerate() {
        writer
            .write_bytes(bytes::Bytes::copy_from_slice(part))
            .unwrap();
        writer.flush().unwrap();
        file.write_all_at(&zeros, (i * mib) as u64).unwrap();
        // The last byte waits for the verdict.
        let readable = ((i + 1) * mib).min(data.len() - 1);
        while got.len() < readable {
            let chunk = std::future::poll_fn(|cx| early.poll_chunk(cx)).await;
            got.extend_from_slice(&chunk.unwrap().unwrap());
        }
    }
    assert!(
        got == data[..data.len() - 1],
        "the early follower got the written bytes"
    );

    let mut late = cache.follow(&id("img")).unwrap().unwrap();
    let mut got = Vec::new();
    while got.len() < data.len() - 1 {
        let chunk = std::future::poll_fn(|cx| late.poll_chunk(cx)).await;
        got.extend_from_slice(&chunk.unwrap().unwrap());
    }
    let window = data.len() - super::super::recent::RECENT_BYTES;
    assert!(got[..window].iter().all(|b| *b == 0), "read from the file");
    assert!(
        got[window..] == data[window..data.len() - 1],
        "taken from memory"
    );
    let held = || {
        cache
            .inner
            .chunks
            .recent_held
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(held() > 0, "the window counts in the cache's bytes");
    writer.finish().unwrap();
    assert_eq!(held(), 0, "an ended fill keeps no window, though followed");
    drop((early, late));
}
