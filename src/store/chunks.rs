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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::MmapMut;

use crate::sync::lock;

/// How much one read takes from the file: large, so a 1 GiB image is a thousand reads.
pub(crate) const CHUNK_SIZE: usize = 1024 * 1024;

/// Idle buffers kept for the next reads (this many MiB stay resident after a spike).
const KEEP_IDLE: usize = 16;

/// The memory all chunks in flight may hold before reads shrink to [`SMALL_CHUNK`]: a burst of
/// clients that do not read (each holding the chunk waiting for it) costs this plus a small
/// chunk each, not a megabyte each (2,000 such clients once held 2 GiB).
pub(crate) const CHUNK_BUDGET: usize = 128 * 1024 * 1024;

/// A read's size once the budget is spent.
pub(crate) const SMALL_CHUNK: usize = 64 * 1024;

/// Readers read ahead (one chunk) while the chunks in flight are under this. Reading the next
/// chunk while the last one is sent is what lets one download use both cores (a 1 GiB hit went
/// from 1.9 to 2.5 GB/s here); with many downloads, their number keeps the cores busy, and a
/// chunk read ahead for a client that stopped reading would only be memory held.
pub(crate) const READ_AHEAD_LIMIT: usize = 8 * CHUNK_SIZE;

/// What `O_DIRECT` reads are aligned to (offsets, lengths, and the maps, which are pages).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Past this, readers wait for chunks in flight to be sent (back-pressure): a crowd of clients
/// that never read holds at most this much, however large the crowd. The node's
/// `client_timeout` ends the connections of clients that took nothing for that long.
pub(crate) const CHUNK_LIMIT: usize = 2 * CHUNK_BUDGET;

/// A reader waiting for room under [`CHUNK_LIMIT`].
pub(crate) type Waiting = Option<std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>>;

/// Buffers of [`CHUNK_SIZE`], shared by every reader of one cache.
#[derive(Debug, Default)]
pub(crate) struct ChunkPool {
    idle: Mutex<Vec<MmapMut>>,
    /// Bytes of the chunks handed out and not yet dropped.
    in_flight: Arc<AtomicUsize>,
    /// Told whenever a chunk is dropped, for readers waiting for room.
    freed: Arc<tokio::sync::Notify>,
    /// Bytes the windows of followed fills keep ([`super::recent::Recent`]).
    pub(crate) recent_held: Arc<AtomicUsize>,
}

impl ChunkPool {
    /// Ready when a read may start: the chunks in flight are under [`CHUNK_LIMIT`]. `waiting`
    /// is the caller's place in line between two polls.
    pub(crate) fn poll_room(
        &self,
        cx: &mut std::task::Context<'_>,
        waiting: &mut Waiting,
    ) -> std::task::Poll<()> {
        use std::future::Future;
        loop {
            if self.in_flight.load(Ordering::Acquire) < CHUNK_LIMIT {
                *waiting = None;
                return std::task::Poll::Ready(());
            }
            let notified =
                waiting.get_or_insert_with(|| Box::pin(Arc::clone(&self.freed).notified_owned()));
            // In line before the second look: a chunk dropped in between is not missed.
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) < CHUNK_LIMIT {
                *waiting = None;
                return std::task::Poll::Ready(());
            }
            std::task::ready!(notified.as_mut().poll(cx));
            *waiting = None;
        }
    }

    /// Whether a reader may read its next chunk before it is asked for: while the chunks in
    /// flight are under [`READ_AHEAD_LIMIT`].
    pub(crate) fn may_read_ahead(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < READ_AHEAD_LIMIT
    }

    /// Reads the next chunk of `file` at `at`, `remaining` bytes being left to read: a whole
    /// chunk (at most [`CHUNK_SIZE`]) while the chunks in flight are within [`CHUNK_BUDGET`], a
    /// [`SMALL_CHUNK`] beyond it. The room is reserved before the read, so a burst of readers
    /// starting at once cannot all take whole chunks. The buffer comes back to the pool when
    /// the returned bytes are dropped.
    pub(crate) fn read_next(
        self: &Arc<Self>,
        file: &File,
        at: u64,
        remaining: u64,
    ) -> io::Result<Bytes> {
        self.read_with(remaining, |map, len| {
            file.read_exact_at(&mut map[..len], at)
        })
    }

    /// [`read_next`](Self::read_next) from a file opened with `O_DIRECT` (`at` a multiple of
    /// [`DIRECT_ALIGN`]): the read asks for whole sectors, and the last chunk of the file for
    /// the sectors past its end, of which the file system gives only what the file holds.
    pub(crate) fn read_next_direct(
        self: &Arc<Self>,
        file: &File,
        at: u64,
        remaining: u64,
    ) -> io::Result<Bytes> {
        self.read_with(remaining, |map, len| {
            let mut filled = 0;
            while filled < len {
                let asked = len.next_multiple_of(DIRECT_ALIGN).min(map.len());
                match file.read_at(&mut map[filled..asked], at + filled as u64) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(())
        })
    }

    /// A chunk of up to `remaining` bytes, filled by `read` (given the whole buffer and the
    /// length to fill).
    fn read_with(
        self: &Arc<Self>,
        remaining: u64,
        read: impl FnOnce(&mut [u8], usize) -> io::Result<()>,
    ) -> io::Result<Bytes> {
        let reserved = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(
                    held + if held < CHUNK_BUDGET {
                        CHUNK_SIZE
                    } else {
                        SMALL_CHUNK
                    },
                )
            })
            .map_or(CHUNK_SIZE, |held| {
                if held < CHUNK_BUDGET {
                    CHUNK_SIZE
                } else {
                    SMALL_CHUNK
                }
            });
        let len = remaining.min(reserved as u64) as usize;
        let map = if reserved == SMALL_CHUNK {
            MmapMut::map_anon(SMALL_CHUNK)
        } else {
            match lock(&self.idle).pop() {
                Some(map) => Ok(map),
                None => MmapMut::map_anon(CHUNK_SIZE),
            }
        };
        let mut map = match map {
            Ok(map) => map,
            Err(err) => {
                self.in_flight.fetch_sub(reserved, Ordering::AcqRel);
                return Err(err);
            }
        };
        if let Err(err) = read(&mut map, len) {
            // The buffer is dropped (unmapped): rare, and nothing to keep it for.
            self.in_flight.fetch_sub(reserved, Ordering::AcqRel);
            return Err(err);
        }
        Ok(Bytes::from_owner(Chunk {
            map: Some(map),
            len,
            pool: Arc::clone(self),
        }))
    }

    fn give_back(&self, map: MmapMut) {
        let held = self.in_flight.fetch_sub(map.len(), Ordering::AcqRel);
        if held >= CHUNK_LIMIT {
            self.freed.notify_waiters();
        }
        if map.len() != CHUNK_SIZE {
            return; // a small map: unmapped here
        }
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

    /// Bytes of the chunks handed out and not yet dropped (for tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_reads_shrink_and_the_memory_comes_back() {
        let pool = Arc::new(ChunkPool::default());
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &vec![5u8; CHUNK_SIZE]).unwrap();
        let whole = CHUNK_BUDGET / CHUNK_SIZE;
        let held: Vec<Bytes> = (0..whole)
            .map(|_| pool.read_next(&file, 0, u64::MAX).unwrap())
            .collect();
        assert!(held.iter().all(|chunk| chunk.len() == CHUNK_SIZE));
        // Clients that do not read hold these: the next readers get small chunks.
        let small = pool.read_next(&file, 0, u64::MAX).unwrap();
        assert_eq!(small.len(), SMALL_CHUNK);
        assert_eq!(
            pool.in_flight.load(Ordering::Relaxed),
            CHUNK_BUDGET + SMALL_CHUNK
        );
        // A failed read gives its room back.
        assert!(pool.read_next(&file, 10 * CHUNK_SIZE as u64, 100).is_err());
        drop(held);
        drop(small);
        assert_eq!(pool.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(
            pool.read_next(&file, 0, u64::MAX).unwrap().len(),
            CHUNK_SIZE
        );
        assert!(pool.idle() <= KEEP_IDLE);
    }

    #[tokio::test]
    async fn past_the_limit_readers_wait_for_a_chunk_to_be_sent() {
        let pool = Arc::new(ChunkPool::default());
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &vec![5u8; CHUNK_SIZE]).unwrap();
        let mut held = Vec::new();
        while pool.in_flight.load(Ordering::Relaxed) < CHUNK_LIMIT {
            held.push(pool.read_next(&file, 0, u64::MAX).unwrap());
        }
        let mut waiting = None;
        let room = std::future::poll_fn(|cx| pool.poll_room(cx, &mut waiting));
        tokio::pin!(room);
        assert!(
            futures_poll_once(room.as_mut()).await.is_none(),
            "no room past the limit"
        );
        drop(held.pop());
        tokio::time::timeout(std::time::Duration::from_secs(5), room)
            .await
            .expect("a sent chunk makes room for a waiting reader");
    }

    /// Polls `future` once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
