//! Tests of the store against temporary directories, by theme.

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

/// A fill of `image` with all of `data` written (in small chunks), expecting its size and MD5,
/// not yet finished.
fn begin(cache: &ImageCache, image: &str, data: &[u8]) -> FillWriter {
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
    writer
}

fn fill(cache: &ImageCache, image: &str, data: &[u8]) -> CachedImage {
    begin(cache, image, data).finish().unwrap()
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

#[cfg(feature = "centralized-db")]
mod central_mirror;
mod direct_io;
mod driver;
mod file_faults;
mod fill;
mod maintenance;
mod open;
mod read;
