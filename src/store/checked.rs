//! Reading a committed image block by block, each block checked against the CRC-32 its fill
//! recorded (`block_sums.rs`) before any of its bytes is handed out: what a node sends to its
//! peers, so that a copy that rotted on its disk stops at the rotten block, is removed, and the
//! peer resumes from that block elsewhere, instead of failing its download at the end.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::block_sums::{BlockSums, Rotten};
use super::cache::{ImageCache, Inner};
use super::chunks::ChunkPool;
use super::direct::set_direct;
use super::read;
use super::record::CachedImage;
use crate::ImageId;

/// The block an image without sums is read in.
const UNCHECKED_BLOCK: u64 = 4 * 1024 * 1024;

/// An open committed image, read a block at a time on tokio's blocking pool (the next block is
/// read while the current one is sent), each block checked against its fill's sums when the
/// file has them.
///
/// The file is read with direct I/O where the file system takes it: a copy is read for a peer
/// once, mostly soon after its fill wrote it with direct I/O, and this machine read such a
/// file through the page cache at a third of the speed.
///
/// A block that does not match its sum ends the reader with an error of kind
/// [`io::ErrorKind::InvalidData`], none of that block's bytes handed out, and the copy is
/// removed from the cache (its file and its record), so that nobody reads it again. Like an
/// [`ImageReader`](super::ImageReader), it counts a hit when the last byte was handed out.
pub struct CheckedReader {
    cache: Arc<Inner>,
    id: ImageId,
    generation: u64,
    record: CachedImage,
    file: Arc<File>,
    /// Whether `file` reads with direct I/O (until the file system refuses a read).
    direct: Arc<AtomicBool>,
    sums: Option<Arc<BlockSums>>,
    /// The next byte to hand out.
    pos: u64,
    /// The checked chunks of the current block not yet handed out, from `pos` on.
    ready: VecDeque<Bytes>,
    /// The block being read: where it starts, and its chunks.
    pending: Option<JoinHandle<Result<Block, Unreadable>>>,
    /// Waiting for room under the chunks' memory limit.
    waiting: super::chunks::Waiting,
}

/// A block read and checked: where it starts, and its bytes in pooled chunks.
type Block = (u64, VecDeque<Bytes>);

impl fmt::Debug for CheckedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedReader")
            .field("id", &self.id)
            .field("pos", &self.pos)
            .field("checked", &self.sums.is_some())
            .field("direct", &self.direct.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a block could not be handed out.
enum Unreadable {
    Io(io::Error),
    Rotten(Rotten),
}

impl ImageCache {
    /// Opens the committed copy of `id` for a checked read; `None` when it is not cached.
    ///
    /// This opens a file and reads its attributes: call it from a blocking context. Reading
    /// the returned handle needs a tokio runtime.
    pub fn open_checked(&self, id: &ImageId) -> io::Result<Option<CheckedReader>> {
        let Some(entry) = self.inner.catalog.get(id) else {
            return Ok(None);
        };
        let Some(file) = read::open_committed(&self.inner, id)? else {
            return Ok(None);
        };
        if !read::sized_as_indexed(&self.inner, id, &entry, file.metadata()?.len())? {
            return Ok(None);
        }
        let sums = BlockSums::load(&file, entry.size).map(Arc::new);
        let direct = Arc::new(AtomicBool::new(set_direct(&file, true).is_ok()));
        Ok(Some(CheckedReader {
            cache: Arc::clone(&self.inner),
            id: id.clone(),
            generation: entry.generation,
            record: CachedImage::new(id, &entry),
            file: Arc::new(file),
            direct,
            sums,
            pos: 0,
            ready: VecDeque::new(),
            pending: None,
            waiting: None,
        }))
    }
}

impl CheckedReader {
    /// The image's record (size, checksum, counters as of opening).
    pub fn record(&self) -> &CachedImage {
        &self.record
    }

    /// Whether the file has its fill's block sums (else it is read unchecked).
    pub fn is_checked(&self) -> bool {
        self.sums.is_some()
    }

    /// Hands out the image from byte `from` on (its whole block is still read and checked).
    #[must_use]
    pub fn starting_at(mut self, from: u64) -> Self {
        self.pos = from.min(self.record.size);
        self
    }

    /// Bytes not yet handed out.
    pub fn remaining(&self) -> u64 {
        self.record.size - self.pos
    }

    /// Starts reading (and checking) the block that holds `at`.
    fn read_block(&mut self, at: u64) {
        let block = self.sums.as_ref().map_or(UNCHECKED_BLOCK, |s| s.block());
        let start = at - at % block;
        let end = self.record.size.min(start + block);
        let (file, sums) = (Arc::clone(&self.file), self.sums.clone());
        let (chunks, direct) = (Arc::clone(&self.cache.chunks), Arc::clone(&self.direct));
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut read = VecDeque::new();
            let mut crc = crc32fast::Hasher::new();
            let mut next = start;
            while next < end {
                let chunk = read_chunk(&chunks, &file, &direct, next, end - next)
                    .map_err(Unreadable::Io)?;
                crc.update(&chunk);
                next += chunk.len() as u64;
                read.push_back(chunk);
            }
            if let Some(sums) = sums {
                let len = end - start;
                sums.check(start, len, crc.finalize())
                    .map_err(Unreadable::Rotten)?;
            }
            Ok((start, read))
        }));
    }

    /// Reads the next chunk; `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.ready.is_empty() {
            if self.pending.is_none() {
                if self.pos >= self.record.size {
                    return Poll::Ready(None);
                }
                ready!(self.cache.chunks.poll_room(cx, &mut self.waiting));
                self.read_block(self.pos);
            }
            let joined = ready!(std::pin::Pin::new(self.pending.as_mut().unwrap()).poll(cx));
            self.pending = None;
            let (mut at, chunks) = match joined {
                Ok(Ok(block)) => block,
                Ok(Err(Unreadable::Io(err))) => return Poll::Ready(Some(Err(err))),
                Ok(Err(Unreadable::Rotten(rotten))) => {
                    return Poll::Ready(Some(Err(self.rotten(rotten))))
                }
                Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
            };
            // A resume from within the block: its bytes before `pos` stay here.
            for chunk in chunks {
                let len = chunk.len() as u64;
                if at + len > self.pos {
                    let skip = self.pos.saturating_sub(at) as usize;
                    self.ready.push_back(chunk.slice(skip..));
                }
                at += len;
            }
            // The next block (from `at`, where this one ends) is read while this one is sent.
            if at < self.record.size {
                self.read_block(at);
            }
        }
        let Some(chunk) = self.ready.pop_front() else {
            return Poll::Ready(None);
        };
        self.pos += chunk.len() as u64;
        self.cache.metrics.bytes_from_cache(chunk.len() as u64);
        if self.pos == self.record.size {
            self.cache.record_hit(&self.id, self.generation);
        }
        Poll::Ready(Some(Ok(chunk)))
    }

    /// Reads the next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Removes the copy a rotten block was found in, and tells why the read ends.
    fn rotten(&self, Rotten { start, len }: Rotten) -> io::Error {
        let end = start + len - 1;
        tracing::error!(image = %self.id, start, end, "a cached copy no longer matches the block sums its fill recorded (rotten on disk); removing it");
        if let Err(err) = read::forget_damaged(&self.cache, &self.id, self.generation) {
            tracing::warn!(image = %self.id, %err, "a rotten copy could not be removed");
        }
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "Bytes {start}-{end} of this node's copy of image {} are not those its fill verified (the disk altered them); the copy was removed, so read the image from another source.",
                self.id
            ),
        )
    }
}

/// A chunk of up to `remaining` bytes at `at`: read directly while `direct` holds. A direct read
/// the file system refuses (it wants another alignment) is read again through the page cache,
/// and the file is read buffered from then on.
fn read_chunk(
    chunks: &Arc<ChunkPool>,
    file: &File,
    direct: &AtomicBool,
    at: u64,
    remaining: u64,
) -> io::Result<Bytes> {
    if !direct.load(Ordering::Relaxed) {
        return chunks.read_next(file, at, remaining);
    }
    match chunks.read_next_direct(file, at, remaining) {
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
            tracing::debug!(%err, "a direct read was refused; reading buffered");
            direct.store(false, Ordering::Relaxed);
            set_direct(file, false)?;
            chunks.read_next(file, at, remaining)
        }
        read => read,
    }
}

impl Drop for CheckedReader {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::store::chunks::DIRECT_ALIGN;

    use super::*;

    /// A direct read at an offset the file system refuses (ext4 wants sector alignment: the
    /// kernel answers EINVAL) is read buffered, and the file stays buffered.
    #[test]
    fn a_direct_read_the_file_system_refuses_is_read_buffered() {
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3 * DIRECT_ALIGN).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        if set_direct(&file, true).is_err() {
            println!("SKIPPED: this file system takes no direct I/O");
            return;
        }
        let chunks = Arc::new(ChunkPool::default());
        let direct = AtomicBool::new(true);
        let aligned = read_chunk(&chunks, &file, &direct, DIRECT_ALIGN as u64, 10).unwrap();
        assert_eq!(&aligned[..], &bytes[DIRECT_ALIGN..DIRECT_ALIGN + 10]);
        assert!(
            direct.load(Ordering::Relaxed),
            "an aligned read stays direct"
        );
        if chunks.read_next_direct(&file, 100, 50).is_ok() {
            println!("SKIPPED: this file system takes unaligned direct reads");
            return;
        }
        let refused = read_chunk(&chunks, &file, &direct, 100, 50).unwrap();
        assert_eq!(&refused[..], &bytes[100..150]);
        assert!(
            !direct.load(Ordering::Relaxed),
            "the file is read buffered from then on"
        );
        let next = read_chunk(&chunks, &file, &direct, 150, 7).unwrap();
        assert_eq!(
            &next[..],
            &bytes[150..157],
            "the file no longer refuses such reads"
        );
    }
}
