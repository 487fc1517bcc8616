//! Following a fill: reading an image from its growing `incomplete/` file while it is written,
//! so concurrent requests for one image share one read of the source.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cache::{ImageCache, Inner};
use super::progress::{FillEnd, FillState, Progress};
use crate::ImageId;

type Changed = Pin<Box<dyn Future<Output = Result<(), watch::error::RecvError>> + Send>>;

/// A reader of a fill in progress. It hands out the bytes as the writer appends them, woken by
/// the writer (no polling), and ends as the fill does: the last byte is held back until the
/// fill is verified, so a reader never sees a complete image whose checksum turned out wrong —
/// it gets an error instead.
pub struct FillFollower {
    cache: Arc<Inner>,
    id: ImageId,
    file: Arc<File>,
    /// The fill's state: its latest chunks, which a follower at its heels takes from memory.
    state: Arc<FillState>,
    progress: watch::Receiver<Progress>,
    size: u64,
    pos: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// Waiting for room under the chunks' memory limit.
    waiting: super::chunks::Waiting,
    changed: Option<Changed>,
}

impl fmt::Debug for FillFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FillFollower")
            .field("id", &self.id)
            .field("pos", &self.pos)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ImageCache {
    /// Follows the fill of `id` in progress, from byte 0. `None` when no fill of it runs or
    /// its size is not known up front (a follower must announce its length).
    ///
    /// Opens a file: call it from a blocking context. Reading needs a tokio runtime.
    pub fn follow(&self, id: &ImageId) -> io::Result<Option<FillFollower>> {
        let Some(state) = self.inner.fills.get(id) else {
            return Ok(None);
        };
        let Some(size) = state.expected_size() else {
            return Ok(None);
        };
        // Subscribed before the file is opened: a fill that ends in between is still seen.
        let progress = state.progress();
        let file = match File::open(self.inner.layout.incomplete(id)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        state.joined();
        Ok(Some(FillFollower {
            cache: Arc::clone(&self.inner),
            id: id.clone(),
            file: Arc::new(file),
            state,
            progress,
            size,
            pos: 0,
            reading: None,
            waiting: None,
            changed: None,
        }))
    }
}

impl FillFollower {
    /// The same follower, handing out bytes from `pos` on (for a reader that already has the
    /// bytes before it).
    pub fn starting_at(mut self, pos: u64) -> Self {
        self.pos = pos.min(self.size);
        self
    }

    /// The image's full size (the fill's expected size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes not yet handed out.
    pub fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    /// `chunk`, read from memory or the file at `pos`, counted as handed out.
    fn handed_out(&mut self, chunk: Bytes) -> Bytes {
        self.pos += chunk.len() as u64;
        self.cache.metrics.bytes_from_cache(chunk.len() as u64);
        chunk
    }

    /// The next chunk; `None` once the whole verified image was handed out; an error when the
    /// fill failed.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(reading) = self.reading.as_mut() {
                let read = ready!(Pin::new(reading).poll(cx));
                self.reading = None;
                return Poll::Ready(Some(match read {
                    Ok(Ok(chunk)) => Ok(self.handed_out(chunk)),
                    Ok(Err(err)) => Err(err),
                    Err(join) => Err(io::Error::other(join)),
                }));
            }
            let readable = {
                let progress = self.progress.borrow_and_update();
                match &progress.end {
                    // Verified bytes stay readable through the open file even when the commit
                    // fails afterwards (a failed fsync removes the file).
                    _ if progress.verified => self.size,
                    Some(FillEnd::Committed | FillEnd::Verified) => self.size,
                    Some(FillEnd::Failed(reason) | FillEnd::Abandoned(reason)) => {
                        let reason = format!("the cache fill of {} failed: {reason}", self.id);
                        return Poll::Ready(Some(Err(io::Error::other(reason))));
                    }
                    // The last byte waits for the verdict.
                    None => progress.written.min(self.size.saturating_sub(1)),
                }
            };
            if self.pos < readable {
                if let Some(chunk) = self.state.recent(self.pos, readable) {
                    return Poll::Ready(Some(Ok(self.handed_out(chunk))));
                }
                ready!(self.cache.chunks.poll_room(cx, &mut self.waiting));
                let remaining = readable - self.pos;
                let (file, at) = (Arc::clone(&self.file), self.pos);
                let chunks = Arc::clone(&self.cache.chunks);
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    chunks.read_next(&file, at, remaining)
                }));
                continue;
            }
            if self.pos >= self.size {
                return Poll::Ready(None);
            }
            let changed = self.changed.get_or_insert_with(|| {
                let mut progress = self.progress.clone();
                Box::pin(async move { progress.changed().await })
            });
            let woke = ready!(changed.as_mut().poll(cx));
            self.changed = None;
            if woke.is_err() {
                // The writer is gone; what it last said (read above) decides on the next turn,
                // and a writer that vanished without a verdict failed.
                if self.progress.borrow().end.is_none() {
                    let reason = format!("the cache fill of {} stopped", self.id);
                    return Poll::Ready(Some(Err(io::Error::other(reason))));
                }
            }
        }
    }
}

impl Drop for FillFollower {
    fn drop(&mut self) {
        self.state.left();
    }
}
