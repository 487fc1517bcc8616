//! The latest bytes of a fill, kept in memory while readers follow it: a follower at the
//! writer's heels takes them from here instead of reading them back from the file. A fill writes
//! its file with direct I/O, so its fresh bytes are not in the page cache: each follower's read
//! of them was a copy out of the kernel, and the first one a read of the disk. The chunks are
//! the ones the writer and the digest share (no copy); only the file has the bytes further back.

use std::collections::VecDeque;

use bytes::Bytes;

/// How many bytes of its latest chunks a followed fill keeps: a few of the writer's 1 MiB
/// blocks, enough for followers that keep up with it.
pub(crate) const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes one read of the kept chunks hands out.
pub(crate) const GATHERED: usize = 1024 * 1024;

/// A part of a chunk at least this large is handed out alone, shared; smaller ones are
/// gathered with the chunks after them.
const SHARED_FROM: usize = 256 * 1024;

/// A fill's latest chunks, each with the offset of its first byte, in order and contiguous.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Recent {
    /// Keeps `chunk`, the image's bytes from `at` on. A chunk that does not follow the last one
    /// kept starts the window again.
    pub(crate) fn keep(&mut self, at: u64, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let follows = self
            .chunks
            .back()
            .is_none_or(|(start, last)| start + last.len() as u64 == at);
        if !follows {
            self.clear();
        }
        self.bytes += chunk.len();
        self.chunks.push_back((at, chunk));
        while self.bytes > RECENT_BYTES && self.chunks.len() > 1 {
            if let Some((_, dropped)) = self.chunks.pop_front() {
                self.bytes -= dropped.len();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// The kept bytes from `from` up to (not including) `until`, at most [`GATHERED`] of them;
    /// `None` when `from` is not kept. A large part of one chunk is shared; the small chunks a
    /// network source gives are gathered into one (a copy in memory costs less than handing each
    /// to the client's socket on its own).
    pub(crate) fn slice(&self, from: u64, until: u64) -> Option<Bytes> {
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
        let mut gathered = bytes::BytesMut::with_capacity((until - from) as usize);
        for part in [first, second].into_iter().chain(parts) {
            gathered.extend_from_slice(&part);
        }
        Some(gathered.freeze())
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
        recent.keep(100, bytes(10, 1));
        recent.keep(110, bytes(10, 2));
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
        let mut recent = Recent::default();
        let mib = 1024 * 1024;
        for i in 0..6u64 {
            recent.keep(i * mib as u64, bytes(mib, i as u8));
        }
        assert_eq!(recent.bytes, RECENT_BYTES);
        assert_eq!(recent.slice(0, u64::MAX), None, "the oldest were let go");
        assert_eq!(
            recent.slice(5 * mib as u64, u64::MAX).unwrap(),
            bytes(mib, 5)
        );
        let shared = recent.slice(4 * mib as u64 + 10, u64::MAX).unwrap();
        assert_eq!(
            shared,
            bytes(mib - 10, 4),
            "a large part is handed out alone"
        );
        let gathered = recent.slice(5 * mib as u64 - 10, u64::MAX).unwrap();
        assert_eq!(gathered.len(), GATHERED, "at most a mebibyte at a time");
        assert_eq!(gathered[..10], bytes(10, 4)[..]);
        assert_eq!(gathered[10..], bytes(mib - 10, 5)[..]);
        recent.keep(10 * mib as u64, bytes(1, 9));
        assert_eq!(
            recent.slice(5 * mib as u64, u64::MAX),
            None,
            "a gap restarts it"
        );
        assert_eq!(
            recent.slice(10 * mib as u64, u64::MAX).unwrap(),
            bytes(1, 9)
        );
    }
}
