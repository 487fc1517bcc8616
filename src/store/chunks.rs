//! The buffers hits and followers read into: anonymous memory maps of [`CHUNK_SIZE`], reused
//! while they are wanted and handed back to the system when they are not.
//!
//! Two things went wrong with a fresh `Vec` per chunk. Each one was zeroed and faulted in page
//! by page before the file was read into it, a cost that showed in every hit's profile. And
//! glibc, once a freed 1 MiB block raises its mmap threshold, keeps later ones in its arenas,
//! so after a spike of a thousand downloads the process stayed at the spike's size for good.
//! Here a chunk's memory comes from `mmap` directly: a few buffers are kept for the next reads
//! (already faulted in, nothing to zero), and the rest are unmapped the moment their chunk has
//! been sent, so resident memory falls back as soon as the load does.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::MmapMut;

use crate::sync::lock;

/// How much one read takes from the file: large, so a 1 GiB image is a thousand reads.
pub(crate) const CHUNK_SIZE: usize = 1024 * 1024;

/// Idle buffers kept for the next reads (this many MiB stay resident after a spike).
const KEEP_IDLE: usize = 16;

/// Buffers of [`CHUNK_SIZE`], shared by every reader of one cache.
#[derive(Debug, Default)]
pub(crate) struct ChunkPool {
    idle: Mutex<Vec<MmapMut>>,
}

impl ChunkPool {
    /// Reads exactly `len` bytes (at most [`CHUNK_SIZE`]) of `file` at `at` into a pooled
    /// buffer. The buffer comes back to the pool when the returned bytes are dropped.
    pub(crate) fn read_exact_at(
        self: &Arc<Self>,
        file: &File,
        at: u64,
        len: usize,
    ) -> io::Result<Bytes> {
        debug_assert!(len <= CHUNK_SIZE);
        let mut map = match lock(&self.idle).pop() {
            Some(map) => map,
            None => MmapMut::map_anon(CHUNK_SIZE)?,
        };
        // On failure the buffer is dropped (unmapped): rare, and nothing to keep it for.
        file.read_exact_at(&mut map[..len], at)?;
        Ok(Bytes::from_owner(Chunk {
            map: Some(map),
            len,
            pool: Arc::clone(self),
        }))
    }

    fn give_back(&self, map: MmapMut) {
        let mut idle = lock(&self.idle);
        if idle.len() < KEEP_IDLE {
            idle.push(map);
        }
        // Otherwise `map` is dropped here: unmapped, its memory back to the system.
    }

    /// Idle buffers held (for tests).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        lock(&self.idle).len()
    }
}

/// The bytes of one read, owning their pooled buffer.
struct Chunk {
    /// `None` only while being dropped.
    map: Option<MmapMut>,
    len: usize,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |map| &map[..self.len])
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            self.pool.give_back(map);
        }
    }
}
