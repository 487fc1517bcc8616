//! Reading a committed image: a handle that streams the file in large chunks.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::cache::{ImageCache, Inner};
use super::driver::IndexRecord;
use super::layout::remove_if_present;
use super::record::CachedImage;
use crate::ImageId;

/// Images up to this size are read whole when they are opened. Opening and reading such an image
/// (from the page cache: microseconds) costs less than handing it to the blocking pool and back.
const READ_AT_OPEN: u64 = 64 * 1024;

/// An open committed image, read chunk by chunk on tokio's blocking pool.
///
/// The file stays readable even if the image is evicted meanwhile (the open handle keeps it).
/// When the last byte has been handed out the image's hit counter goes up: a hit counts only
/// when the whole body was delivered.
pub struct ImageReader {
    cache: Arc<Inner>,
    id: ImageId,
    /// The index entry it was opened from (its generation is the commit this reader reads: a
    /// hit never counts for a later commit of the same id); the public record is made of it
    /// when asked for.
    entry: CachedEntry,
    record: std::sync::OnceLock<CachedImage>,
    bytes: Stored,
    pos: u64,
    end: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    /// Waiting for room under the chunks' memory limit.
    waiting: super::chunks::Waiting,
}

impl fmt::Debug for ImageReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageReader")
            .field("id", &self.id)
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ImageCache {
    /// Opens the committed copy of `id` for reading; `None` when it is not cached.
    ///
    /// This opens a file: call it from a blocking context (for instance
    /// `tokio::task::spawn_blocking`). Reading the returned handle needs a tokio runtime.
    pub fn open_for_read(&self, id: &ImageId) -> io::Result<Option<ImageReader>> {
        match self.inner.catalog.get(id) {
            Some(entry) => self.open_entry(id, CachedEntry(entry)),
            None => Ok(None),
        }
    }

    /// The index entry of a committed `id`: what a hit looks up once, to decide on and then
    /// [`open_entry`](Self::open_entry).
    pub(crate) fn cached_entry(&self, id: &ImageId) -> Option<CachedEntry> {
        self.inner.catalog.get(id).map(CachedEntry)
    }

    /// [`open_for_read`](Self::open_for_read) of the entry a lookup gave: no second lookup. A
    /// copy evicted meanwhile is `None`; one evicted and cached again opens with the record
    /// looked up, which its size on disk must match (an image's bytes never change).
    pub(crate) fn open_entry(
        &self,
        id: &ImageId,
        CachedEntry(entry): CachedEntry,
    ) -> io::Result<Option<ImageReader>> {
        if let Some(whole) = self.inner.small.get(id, entry.generation) {
            let bytes = Stored::Whole(whole);
            return Ok(Some(self.reader(id, entry, bytes)));
        }
        let Some(file) = open_committed(&self.inner, id)? else {
            return Ok(None);
        };
        // A small image is read whole here, one byte past its size, which also tells its length
        // on disk; a larger one asks the file system.
        let (whole, on_disk) = if entry.size > 0 && entry.size <= READ_AT_OPEN {
            let read = read_up_to(&file, entry.size as usize + 1)?;
            let len = read.len() as u64;
            (Some(read.slice(..(len.min(entry.size) as usize))), len)
        } else {
            (None, file.metadata()?.len())
        };
        if !sized_as_indexed(&self.inner, id, &entry, on_disk)? {
            return Ok(None);
        }
        let bytes = match whole {
            Some(whole) => {
                self.inner.small.keep(id, entry.generation, &whole);
                Stored::Whole(whole) // the file closes here: it has nothing more to give
            }
            None => Stored::File(Arc::new(file)),
        };
        Ok(Some(self.reader(id, entry, bytes)))
    }

    fn reader(&self, id: &ImageId, entry: IndexRecord, bytes: Stored) -> ImageReader {
        ImageReader {
            cache: Arc::clone(&self.inner),
            id: id.clone(),
            end: entry.size,
            entry: CachedEntry(entry),
            record: std::sync::OnceLock::new(),
            bytes,
            pos: 0,
            pending: None,
            waiting: None,
        }
    }
}

/// Opens the committed file of `id`; `None` when it was evicted since its entry was looked up.
pub(crate) fn open_committed(inner: &Inner, id: &ImageId) -> io::Result<Option<File>> {
    match File::open(inner.layout.committed(id)) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether the file of `entry`'s commit of `id` has the size `entry` recorded (`on_disk` is
/// its length). One that does not is not the bytes that were verified: it is dropped, logged,
/// so that the next request fills it afresh.
pub(crate) fn sized_as_indexed(
    inner: &Inner,
    id: &ImageId,
    entry: &IndexRecord,
    on_disk: u64,
) -> io::Result<bool> {
    if on_disk == entry.size {
        return Ok(true);
    }
    tracing::error!(image = %id, indexed = entry.size, on_disk, "a cached file has the wrong size; removing it");
    forget_damaged(inner, id, entry.generation)?;
    Ok(false)
}

/// Drops the commit `generation` of `id`, whose file is not the bytes that were verified, so
/// that the next request fills it afresh. The index learns it behind: this may run on the hit
/// path, which never waits on it.
pub(crate) fn forget_damaged(inner: &Inner, id: &ImageId, generation: u64) -> io::Result<()> {
    inner.small.forget([id]);
    if inner.catalog.forget(id, generation) {
        remove_if_present(&inner.layout.committed(id))?;
    }
    Ok(())
}

/// Where a reader's bytes come from.
enum Stored {
    /// The whole image, read at open (or kept in memory after an earlier hit).
    Whole(Bytes),
    /// The open file, read chunk by chunk.
    File(Arc<File>),
}

/// A committed image's index entry, as one lookup found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedEntry(IndexRecord);

impl CachedEntry {
    /// Whether [`ImageCache::open_entry`] reads it whole at once: opening it costs a few
    /// microseconds (a page-cache copy), less than handing the open to a blocking thread and
    /// back.
    pub(crate) fn opens_in_place(&self) -> bool {
        self.0.size <= READ_AT_OPEN
    }

    /// The copy's size in bytes, as a HEAD answers it.
    pub(crate) fn size(&self) -> u64 {
        self.0.size
    }

    /// The copy's MD5, as a HEAD answers it.
    pub(crate) fn md5(&self) -> Option<&[u8; 16]> {
        self.0.md5.as_ref()
    }
}

impl ImageReader {
    /// The image's record (size, checksum, counters as of opening).
    pub fn record(&self) -> &CachedImage {
        self.record
            .get_or_init(|| CachedImage::new(&self.id, &self.entry.0))
    }

    /// The index entry the reader was opened from (what a hit's headers are made of).
    pub(crate) fn entry(&self) -> &CachedEntry {
        &self.entry
    }

    /// Reads only `range` (inclusive byte offsets, within the image) instead of the whole
    /// image. The hit then counts when the whole range was handed out.
    #[must_use]
    pub fn limit_to(mut self, range: std::ops::RangeInclusive<u64>) -> Self {
        let end = range.end().saturating_add(1).min(self.entry.0.size);
        self.pos = (*range.start()).min(end);
        self.end = end;
        self
    }

    /// Bytes not yet handed out.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Reads the next chunk; `None` at the end. A file shorter than its record is an error,
    /// never a short image.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.pending.is_none() {
            if self.pos >= self.end {
                return Poll::Ready(None);
            }
            let file = match &self.bytes {
                Stored::Whole(whole) => {
                    let chunk = whole.slice(self.pos as usize..self.end as usize);
                    self.cache.metrics.bytes_from_cache(chunk.len() as u64);
                    self.pos = self.end;
                    self.cache.record_hit(&self.id, self.entry.0.generation);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Stored::File(file) => Arc::clone(file),
            };
            ready!(self.cache.chunks.poll_room(cx, &mut self.waiting));
            self.read_next(file);
        }
        let joined = ready!(std::pin::Pin::new(self.pending.as_mut().unwrap()).poll(cx));
        self.pending = None;
        let chunk = match joined {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(err)) => return Poll::Ready(Some(Err(err))),
            Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
        };
        self.pos += chunk.len() as u64;
        self.cache.metrics.bytes_from_cache(chunk.len() as u64);
        if self.pos == self.end {
            self.cache.record_hit(&self.id, self.entry.0.generation);
        } else if let Stored::File(file) = &self.bytes {
            // The next chunk is read while this one is sent, while few chunks are in flight.
            if self.cache.chunks.may_read_ahead() {
                let file = Arc::clone(file);
                self.read_next(file);
            }
        }
        Poll::Ready(Some(Ok(chunk)))
    }

    /// Starts reading the chunk at `pos` on the blocking pool.
    fn read_next(&mut self, file: Arc<File>) {
        let (remaining, at) = (self.end - self.pos, self.pos);
        let chunks = Arc::clone(&self.cache.chunks);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            chunks.read_next(&file, at, remaining)
        }));
    }

    /// Reads the next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

/// Reads from the start of `file` until `limit` bytes or the end of the file.
fn read_up_to(file: &File, limit: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; limit];
    let mut filled = 0;
    while filled < limit {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}
