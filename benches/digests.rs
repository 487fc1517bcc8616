//! Which digest implementation verifies fills fastest: RustCrypto's (`md-5`, `sha1`, `sha2`, what
//! the cache uses) and aws-lc-rs's (assembly, already built for TLS) on 8 MiB buffers, each
//! printed beside `openssl speed -evp <algo>` on this machine, one core (skipped with a message
//! where `openssl` is missing).
//!
//! ```sh
//! cargo bench --bench digests
//! ```

use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::Digest;

const BUFFER: usize = 8 * 1024 * 1024;

/// `openssl speed -evp ALGO` on 8 KiB blocks for one second, in MB/s; `None` without openssl.
fn openssl_speed(algorithm: &str) -> Option<f64> {
    let output = Command::new("openssl")
        .args([
            "speed", "-evp", algorithm, "-bytes", "8192", "-seconds", "1",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // The last line: "sha512          633547.27k" (thousands of bytes per second).
    let last = text.lines().last()?;
    let kilobytes: f64 = last
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kilobytes / 1000.0)
}

fn rustcrypto<D: Digest>(data: &[u8]) -> usize {
    let mut digest = D::new();
    // In the 1 MiB chunks a fill hashes.
    for chunk in data.chunks(1024 * 1024) {
        digest.update(chunk);
    }
    digest.finalize().len()
}

fn aws_lc(algorithm: &'static aws_lc_rs::digest::Algorithm, data: &[u8]) -> usize {
    let mut context = aws_lc_rs::digest::Context::new(algorithm);
    for chunk in data.chunks(1024 * 1024) {
        context.update(chunk);
    }
    context.finish().as_ref().len()
}

/// A digest over a buffer; the digest's length, so the work is not optimised away.
type Hash = fn(&[u8]) -> usize;

fn digests(c: &mut Criterion) {
    let data: Vec<u8> = (0..BUFFER).map(|i| (i * 31 % 251) as u8).collect();
    let candidates: [(&str, Hash, Option<Hash>); 5] = [
        ("md5", rustcrypto::<md5::Md5>, None),
        (
            "sha1",
            rustcrypto::<sha1::Sha1>,
            Some(|d| aws_lc(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, d)),
        ),
        (
            "sha256",
            rustcrypto::<sha2::Sha256>,
            Some(|d| aws_lc(&aws_lc_rs::digest::SHA256, d)),
        ),
        (
            "sha384",
            rustcrypto::<sha2::Sha384>,
            Some(|d| aws_lc(&aws_lc_rs::digest::SHA384, d)),
        ),
        (
            "sha512",
            rustcrypto::<sha2::Sha512>,
            Some(|d| aws_lc(&aws_lc_rs::digest::SHA512, d)),
        ),
    ];
    for (name, rust, aws) in candidates {
        match openssl_speed(name) {
            Some(speed) => println!("{name}: openssl speed -evp {name}, one core: {speed:.0} MB/s"),
            None => println!("{name}: SKIPPED openssl speed (openssl is not installed)"),
        }
        let mut group = c.benchmark_group(format!("digest/{name}"));
        group.throughput(Throughput::Bytes(BUFFER as u64));
        group.sample_size(10);
        group.bench_function("rustcrypto", |b| b.iter(|| rust(&data)));
        if let Some(aws) = aws {
            group.bench_function("aws-lc-rs", |b| b.iter(|| aws(&data)));
        }
        group.finish();
    }
}

criterion_group!(benches, digests);
criterion_main!(benches);
