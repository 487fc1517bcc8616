//! The latest bytes of a fill, kept in memory while readers follow it: a follower at the
//! writer's heels takes them from here instead of reading them back from the file. A fill writes
//! its file with direct I/O, so its fresh bytes are not in the page cache: each follower's read
//! of them was a copy out of the kernel, and the first one a read of the disk. Large chunks are
//! the ones the writer and the digest share (no copy); the small ones a network source gives
//! are gathered once, as they are kept, into blocks every follower then shares (one copy per
//! fill, not one per follower); only the file has the bytes further back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// How many bytes of its latest chunks a followed fill keeps: enough for followers that fall
/// behind the writer for a moment (a client's process not scheduled, a socket full). With 4
/// MiB (20 ms of a 200 MiB/s fill), the clients of a 3-node rollout on 2 cores fell out of
/// the window, and reading the file back was a quarter of the nodes' CPU time.
pub(crate) const RECENT_BYTES: usize = 32 * 1024 * 1024;

/// What each window keeps at least, whatever the others hold.
pub(crate) const RECENT_MIN: usize = 4 * 1024 * 1024;

/// The bytes all of a cache's windows may hold together before each shrinks to
/// [`RECENT_MIN`] (the chunks being gathered, at most [`GATHERED`] a fill, aside).
pub(crate) const RECENT_BUDGET: usize = 128 * 1024 * 1024;

/// The most bytes one read of the kept chunks hands out, and the size of the blocks small
/// chunks are gathered into.
pub(crate) const GATHERED: usize = 1024 * 1024;

/// A chunk at least this large is kept as it is, shared; smaller ones are gathered.
const SHARED_FROM: usize = 256 * 1024;

/// A fill's latest chunks, each with the offset of its first byte, in order and contiguous,
/// and after them the small chunks being gathered into the next block.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Small chunks gathered since the last block was sealed, from `tail_at` on.
    tail: BytesMut,
    tail_at: u64,
    /// The bytes every window of the cache holds, this one's included.
    held: Arc<AtomicUsize>,
}

impl Recent {
    /// A window whose bytes count in `held`, shared by the cache's windows.
    pub(crate) fn sharing(held: Arc<AtomicUsize>) -> Self {
        Recent {
            chunks: VecDeque::new(),
            bytes: 0,
            tail: BytesMut::new(),
            tail_at: 0,
            held,
        }
    }

    /// Keeps `chunk`, the image's bytes from `at` on. A chunk that does not follow the last one
    /// kept starts the window again.
    pub(crate) fn keep(&mut self, at: u64, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.end().is_some_and(|end| end != at) {
            self.clear();
        }
        if chunk.len() >= SHARED_FROM {
            self.seal();
            self.push(at, chunk.clone());
            return;
        }
        // Blocks end where the file's direct writes do (every GATHERED bytes), so a follower
        // allowed the file's next mebibyte finds it as one block.
        let (mut rest, mut at) = (&chunk[..], at);
        while !rest.is_empty() {
            let room = GATHERED - (at % GATHERED as u64) as usize;
            if self.tail.is_empty() {
                self.tail_at = at;
                if self.tail.capacity() < room {
                    self.tail = BytesMut::with_capacity(GATHERED);
                }
            }
            let take = room.min(rest.len());
            self.tail.extend_from_slice(&rest[..take]);
            (rest, at) = (&rest[take..], at + take as u64);
            if take == room {
                self.seal();
            }
        }
    }

    /// The offset after the last byte kept, when any is.
    fn end(&self) -> Option<u64> {
        if !self.tail.is_empty() {
            return Some(self.tail_at + self.tail.len() as u64);
        }
        let (start, last) = self.chunks.back()?;
        Some(start + last.len() as u64)
    }

    /// Moves the bytes gathered so far into the window, as one block; the rest of the tail's
    /// buffer gathers the next ones.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let at = self.tail_at;
            let block = self.tail.split().freeze();
            self.tail_at += block.len() as u64;
            self.push(at, block);
        }
    }

    fn push(&mut self, at: u64, chunk: Bytes) {
        self.bytes += chunk.len();
        self.held.fetch_add(chunk.len(), Ordering::Relaxed);
        self.chunks.push_back((at, chunk));
        while self.chunks.len() > 1
            && (self.bytes > RECENT_BYTES
                || (self.bytes > RECENT_MIN && self.held.load(Ordering::Relaxed) > RECENT_BUDGET))
        {
            if let Some((_, dropped)) = self.chunks.pop_front() {
                self.bytes -= dropped.len();
                self.held.fetch_sub(dropped.len(), Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.tail.clear();
    }

    /// The kept bytes from `from` up to (not including) `until`, at most [`GATHERED`] of them;
    /// `None` when `from` is not kept. Bytes still being gathered are sealed first when the
    /// follower may read them. A large part of one chunk is shared; small parts (of blocks
    /// sealed early, for a follower that was allowed their bytes) are gathered into one.
    pub(crate) fn slice(&mut self, from: u64, until: u64) -> Option<Bytes> {
        if !self.tail.is_empty() && until > self.tail_at {
            self.seal();
        }
        let index = self
            .chunks
            .partition_point(|(start, _)| *start <= from)
            .checked_sub(1)?;
        let until = until.min(from + GATHERED as u64);
        let mut parts = self.chunks.range(index..).map_while(|(start, chunk)| {
            let (begin, end) = (from.max(*start), (start + chunk.len() as u64).min(until));
            (begin < end).then(|| chunk.slice((begin - start) as usize..(end - start) as usize))
        });
        let first = parts.next()?;
        if first.len() >= SHARED_FROM {
            return Some(first);
        }
        let Some(second) = parts.next() else {
            return Some(first);
        };
        let mut gathered = BytesMut::with_capacity((until - from) as usize);
        for part in [first, second].into_iter().chain(parts) {
            gathered.extend_from_slice(&part);
        }
        Some(gathered.freeze())
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn slices_come_from_the_chunk_holding_the_offset_and_stop_at_the_limit() {
        let mut recent = Recent::default();
        recent.keep(100, &bytes(10, 1));
        recent.keep(110, &bytes(10, 2));
        assert_eq!(recent.slice(99, 200), None, "before the window");
        let mut across = bytes(5, 1).to_vec();
        across.extend_from_slice(&bytes(10, 2));
        assert_eq!(
            recent.slice(105, 200).unwrap(),
            across,
            "gathered across chunks"
        );
        assert_eq!(
            recent.slice(105, 110).unwrap(),
            bytes(5, 1),
            "up to the limit"
        );
        assert_eq!(recent.slice(112, 115).unwrap(), bytes(3, 2));
        assert_eq!(recent.slice(115, 115), None, "nothing readable yet");
        assert_eq!(recent.slice(120, 200), None, "past the last chunk");
    }

    #[test]
    fn the_window_keeps_its_latest_bytes_and_restarts_on_a_gap() {
        let held = Arc::new(AtomicUsize::new(0));
        let mut recent = Recent::sharing(Arc::clone(&held));
        let mib = 1024 * 1024;
        let last = (RECENT_BYTES / mib + 2) as u64;
        for i in 0..=last {
            recent.keep(i * mib as u64, &bytes(mib, i as u8));
        }
        assert_eq!(recent.bytes, RECENT_BYTES);
        assert_eq!(
            held.load(Ordering::Relaxed),
            RECENT_BYTES,
            "counted in the cache's bytes"
        );
        assert_eq!(recent.slice(0, u64::MAX), None, "the oldest were let go");
        assert_eq!(
            recent.slice(last * mib as u64, u64::MAX).unwrap(),
            bytes(mib, last as u8)
        );
        let shared = recent
            .slice((last - 1) * mib as u64 + 10, u64::MAX)
            .unwrap();
        assert_eq!(
            shared,
            bytes(mib - 10, last as u8 - 1),
            "a large part is handed out alone"
        );
        let gathered = recent.slice(last * mib as u64 - 10, u64::MAX).unwrap();
        assert_eq!(gathered.len(), GATHERED, "at most a mebibyte at a time");
        assert_eq!(gathered[..10], bytes(10, last as u8 - 1)[..]);
        assert_eq!(gathered[10..], bytes(mib - 10, last as u8)[..]);
        recent.keep(100 * mib as u64, &bytes(mib, 9));
        assert_eq!(
            recent.slice(last * mib as u64, u64::MAX),
            None,
            "a gap restarts it"
        );
        assert_eq!(
            recent.slice(100 * mib as u64, u64::MAX).unwrap(),
            bytes(mib, 9)
        );
        assert_eq!(held.load(Ordering::Relaxed), mib);
        drop(recent);
        assert_eq!(
            held.load(Ordering::Relaxed),
            0,
            "a window gone holds nothing"
        );
    }

    #[test]
    fn windows_shrink_to_their_least_when_together_they_hold_the_budget() {
        static ZEROS: [u8; GATHERED] = [0; GATHERED];
        let held = Arc::new(AtomicUsize::new(0));
        let mut windows: Vec<Recent> = (0..RECENT_BUDGET / RECENT_BYTES + 1)
            .map(|_| Recent::sharing(Arc::clone(&held)))
            .collect();
        for window in &mut windows {
            for i in 0..(RECENT_BYTES / GATHERED) as u64 {
                window.keep(i * GATHERED as u64, &Bytes::from_static(&ZEROS));
            }
        }
        assert!(held.load(Ordering::Relaxed) <= RECENT_BUDGET + RECENT_BYTES);
        let last = windows.last().unwrap();
        assert_eq!(
            last.bytes, RECENT_MIN,
            "the window over the budget keeps its least"
        );
        assert_eq!(
            windows[0].bytes, RECENT_BYTES,
            "the ones before it are whole"
        );
        windows.clear();
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn small_chunks_are_gathered_once_and_every_follower_shares_the_block() {
        let mut recent = Recent::default();
        let small = 64 * 1024;
        for i in 0..20u64 {
            recent.keep(i * small as u64, &bytes(small, i as u8));
        }
        let whole: Vec<u8> = (0..20u8).flat_map(|i| vec![i; small]).collect();
        assert_eq!(recent.chunks.len(), 1, "the first mebibyte is one block");
        assert_eq!(recent.chunks[0].1.len(), GATHERED);
        assert_eq!(
            recent.tail.len(),
            4 * small,
            "the rest is still being gathered"
        );
        let (one, two) = (
            recent.slice(0, u64::MAX).unwrap(),
            recent.slice(0, u64::MAX).unwrap(),
        );
        assert!(
            one == whole[..GATHERED],
            "the first block holds the first mebibyte"
        );
        assert_eq!(one.as_ptr(), two.as_ptr(), "two followers share one copy");
        let sealed = recent.slice(GATHERED as u64, GATHERED as u64 + 10).unwrap();
        assert!(
            sealed == whole[GATHERED..GATHERED + 10],
            "a follower allowed into the tail has it sealed"
        );
        recent.keep(20 * small as u64, &bytes(small, 20));
        let mut rest = whole[GATHERED + 5..].to_vec();
        rest.extend_from_slice(&bytes(small, 20));
        let across = recent.slice(GATHERED as u64 + 5, u64::MAX).unwrap();
        assert!(across == rest, "gathering goes on after a seal");
        recent.keep(42, &bytes(1, 1));
        assert_eq!(
            recent.slice(0, u64::MAX),
            None,
            "a gap drops the gathered bytes too"
        );
        assert_eq!(recent.slice(42, u64::MAX).unwrap(), bytes(1, 1));
    }

    #[test]
    fn gathered_blocks_end_where_the_files_blocks_do() {
        let mut recent = Recent::default();
        let at = GATHERED as u64 - 100;
        recent.keep(at, &bytes(300, 7));
        assert_eq!(recent.chunks.len(), 1);
        assert_eq!(
            recent.chunks[0],
            (at, bytes(100, 7)),
            "sealed at the boundary"
        );
        assert_eq!((recent.tail_at, recent.tail.len()), (GATHERED as u64, 200));
        assert_eq!(recent.slice(at, u64::MAX).unwrap(), bytes(300, 7));
    }
}
