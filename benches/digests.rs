//! Which digest implementation verifies fills fastest, on 8 MiB buffers fed in 1 MiB pieces:
//! RustCrypto's (`md-5`, `sha1`, `sha2`), ring's and aws-lc-rs's (assembly), and the system's
//! OpenSSL libcrypto through the `openssl` crate (with the `openssl` feature), each printed
//! beside `openssl speed -evp <algo>` on this machine, one core (skipped with a message where
//! the `openssl` command is missing).
//!
//! ```sh
//! cargo bench --features openssl --bench digests
//! ```
//!
//! The cache uses the fastest it has (`src/store/digest.rs`): OpenSSL's with the feature, else
//! ring's for SHA-256/384/512 and RustCrypto's for MD5 (ring has none) and SHA-1.

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

fn ring(algorithm: &'static ring::digest::Algorithm, data: &[u8]) -> usize {
    let mut context = ring::digest::Context::new(algorithm);
    for chunk in data.chunks(1024 * 1024) {
        context.update(chunk);
    }
    context.finish().as_ref().len()
}

#[cfg(feature = "openssl")]
fn openssl(algorithm: openssl::hash::MessageDigest, data: &[u8]) -> usize {
    let mut hasher = openssl::hash::Hasher::new(algorithm).unwrap();
    for chunk in data.chunks(1024 * 1024) {
        hasher.update(chunk).unwrap();
    }
    hasher.finish().unwrap().len()
}

/// A digest over a buffer; the digest's length, so the work is not optimised away.
type Hash = fn(&[u8]) -> usize;

/// An algorithm's candidates, by implementation.
fn candidates(name: &str) -> Vec<(&'static str, Hash)> {
    #[cfg_attr(not(feature = "openssl"), allow(unused_mut))]
    let mut all: Vec<(&'static str, Hash)> = match name {
        "md5" => vec![("rustcrypto", rustcrypto::<md5::Md5>)],
        "sha1" => vec![
            ("rustcrypto", rustcrypto::<sha1::Sha1>),
            ("ring", |d| ring(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, d)),
            ("aws-lc-rs", |d| {
                aws_lc(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, d)
            }),
        ],
        "sha256" => vec![
            ("rustcrypto", rustcrypto::<sha2::Sha256>),
            ("ring", |d| ring(&ring::digest::SHA256, d)),
            ("aws-lc-rs", |d| aws_lc(&aws_lc_rs::digest::SHA256, d)),
        ],
        "sha384" => vec![
            ("rustcrypto", rustcrypto::<sha2::Sha384>),
            ("ring", |d| ring(&ring::digest::SHA384, d)),
            ("aws-lc-rs", |d| aws_lc(&aws_lc_rs::digest::SHA384, d)),
        ],
        _ => vec![
            ("rustcrypto", rustcrypto::<sha2::Sha512>),
            ("ring", |d| ring(&ring::digest::SHA512, d)),
            ("aws-lc-rs", |d| aws_lc(&aws_lc_rs::digest::SHA512, d)),
        ],
    };
    #[cfg(feature = "openssl")]
    {
        use openssl::hash::MessageDigest;
        all.push((
            "openssl-crate",
            match name {
                "md5" => |d| openssl(MessageDigest::md5(), d),
                "sha1" => |d| openssl(MessageDigest::sha1(), d),
                "sha256" => |d| openssl(MessageDigest::sha256(), d),
                "sha384" => |d| openssl(MessageDigest::sha384(), d),
                _ => |d| openssl(MessageDigest::sha512(), d),
            },
        ));
    }
    all
}

fn digests(c: &mut Criterion) {
    let data: Vec<u8> = (0..BUFFER).map(|i| (i * 31 % 251) as u8).collect();
    for name in ["md5", "sha1", "sha256", "sha384", "sha512"] {
        match openssl_speed(name) {
            Some(speed) => println!("{name}: openssl speed -evp {name}, one core: {speed:.0} MB/s"),
            None => println!("{name}: SKIPPED openssl speed (openssl is not installed)"),
        }
        let mut group = c.benchmark_group(format!("digest/{name}"));
        group.throughput(Throughput::Bytes(BUFFER as u64));
        group.sample_size(10);
        for (implementation, hash) in candidates(name) {
            group.bench_function(implementation, |b| b.iter(|| hash(&data)));
        }
        group.finish();
    }
}

criterion_group!(benches, digests);
criterion_main!(benches);
