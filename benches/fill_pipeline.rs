//! The parts of a fill, each alone, on 256 MiB in 1 MiB chunks: the writer that puts the bytes
//! in `incomplete/` (direct I/O, the default where the file system takes it, against buffered
//! writes through the page cache), with the digest that verifies them on its thread beside it
//! (SHA-512, or MD5 for an image with only Glance's `checksum`), and the store's read of a
//! cached file (the hit side of the same bytes). The whole pipeline, with the relay to a client,
//! is `data_path`'s `miss` group; the digests alone are `digests`; the comparison with Glance
//! and nginx is `benches/compare.py`.
//!
//! ```sh
//! cargo bench --features openssl --bench fill_pipeline
//! ```
//!
//! Each figure is throughput; the process's CPU time per GiB of each part is printed beside it
//! (from `/proc/self/stat`), which is what the two cores of a node share.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha2::Digest;
use tower_image_cache::store::{Expected, FillIo, ImageCache};
use tower_image_cache::{CacheConfig, ImageId};

const SIZE: usize = 256 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

/// Writes as a file system without direct I/O does: a direct write is refused with `EINVAL`,
/// and the fill goes on buffered.
struct Buffered;

impl FillIo for Buffered {
    fn write(&self, file: &mut std::fs::File, buf: &[u8]) -> io::Result<()> {
        if rustix::fs::fcntl_getfl(&*file)?.contains(rustix::fs::OFlags::DIRECT) {
            return Err(io::Error::from_raw_os_error(22));
        }
        io::Write::write_all(file, buf)
    }
}

fn data() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..SIZE / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect()
}

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat` (in the
/// kernel's USER_HZ, 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `work` `iterations` times; prints its CPU time per GiB once per benchmark.
fn measured(
    name: &str,
    iterations: u64,
    printed: &AtomicU64,
    mut work: impl FnMut(),
) -> std::time::Duration {
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..iterations {
        work();
    }
    let elapsed = started.elapsed();
    if printed.fetch_add(1, Ordering::Relaxed) == 1 {
        let gib = (iterations as f64 * SIZE as f64) / (1u64 << 30) as f64;
        eprintln!(
            "{name}: {:.2} s of CPU per GiB",
            (cpu_seconds() - cpu) / gib
        );
    }
    elapsed
}

fn writer(c: &mut Criterion) {
    let data = data();
    let sha512 = hex::encode(sha2::Sha512::digest(&data));
    let md5 = hex::encode(md5::Md5::digest(&data));
    let mut group = c.benchmark_group("fill_writer");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    let id = ImageId::new("img").unwrap();
    for (digest, expected) in [
        ("sha512", Expected::default().sha512_hex(&sha512)),
        ("md5", Expected::default().md5_hex(&md5)),
    ] {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let config = CacheConfig::new(dir.path());
            let cache = if direct {
                ImageCache::open(config).unwrap()
            } else {
                ImageCache::open_with_io(config, std::sync::Arc::new(Buffered)).unwrap()
            };
            let name = format!("{digest} {}", if direct { "direct" } else { "buffered" });
            let printed = AtomicU64::new(0);
            group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter_custom(|iterations| {
                    measured(&name, iterations, &printed, || {
                        let expected = expected.clone().size(SIZE as u64);
                        let mut fill = cache.begin_fill(&id, expected).unwrap();
                        for chunk in data.chunks(CHUNK) {
                            fill.write(chunk).unwrap();
                        }
                        fill.finish().unwrap();
                        cache.delete_cached_image(&id).unwrap();
                    })
                })
            });
        }
    }
    group.finish();
}

fn reader(c: &mut Criterion) {
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
    let id = ImageId::new("img").unwrap();
    let mut fill = cache
        .begin_fill(&id, Expected::default().size(SIZE as u64))
        .unwrap();
    fill.write(&data).unwrap();
    fill.finish().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("fill_reader");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    let printed = AtomicU64::new(0);
    group.bench_function("cached file, page cache warm", |b| {
        b.iter_custom(|iterations| {
            measured("reader", iterations, &printed, || {
                runtime.block_on(async {
                    let mut reader = cache.open_for_read(&id).unwrap().unwrap();
                    let mut n = 0;
                    while let Some(chunk) = reader.next_chunk().await {
                        n += chunk.unwrap().len();
                    }
                    assert_eq!(n, SIZE);
                })
            })
        })
    });
    group.finish();
}

criterion_group!(benches, writer, reader);
criterion_main!(benches);
