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
