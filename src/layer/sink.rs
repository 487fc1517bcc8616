//! The cache writer's end of a fill (`tee.rs` feeds it): a task appending the chunks to the
//! file in batches, each batch on a blocking thread borrowed for its write only, and putting the
//! bytes in the file for the fill's followers whenever its source pauses.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::store::FillWriter;
use crate::sync::lock;
use crate::ImageId;

/// Chunks in flight towards the cache writer.
const CHANNEL_CHUNKS: usize = 4;

/// How the source body ended, as far as the cache writer is concerned.
#[derive(Debug, Default)]
pub(crate) enum Outcome {
    /// The fill task stopped before the body ended (the runtime is shutting down).
    #[default]
    Unfinished,
    /// Every byte arrived.
    Complete,
    /// The source failed or sent the wrong number of bytes.
    Failed(String),
}

/// The writer's end of the fill: a task appending chunks to the file in batches, each batch
/// on a blocking thread borrowed for its write only (a fill waiting on its upstream holds none).
pub(crate) struct CacheSink {
    pub(crate) chunks: mpsc::Sender<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
}

/// Bytes gathered into one blocking write, at most.
const WRITE_BATCH: usize = 4 * 1024 * 1024;

impl CacheSink {
    /// `slot` is held until the fill is committed or rolled back.
    pub(crate) fn start(writer: FillWriter, slot: Option<OwnedSemaphorePermit>) -> CacheSink {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let outcome = Arc::new(Mutex::new(Outcome::Unfinished));
        let ended = Arc::clone(&outcome);
        let write = async move {
            let _slot = slot;
            write_fill(writer, rx, ended).await;
        };
        tokio::spawn(write.instrument(tracing::Span::current()));
        CacheSink {
            chunks: tx,
            outcome,
        }
    }

    pub(crate) fn end(self, outcome: Outcome) {
        *lock(&self.outcome) = outcome;
    }
}

async fn write_fill(
    writer: FillWriter,
    mut chunks: mpsc::Receiver<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
) {
    let id = writer.id().clone();
    let mut writer = Some(writer);
    loop {
        let pending = writer.as_ref().is_some_and(FillWriter::has_unflushed);
        let first = if pending {
            match tokio::time::timeout(FLUSH_WHEN_IDLE, chunks.recv()).await {
                Ok(received) => received,
                Err(_idle) => {
                    writer = flush(writer, &id).await;
                    continue;
                }
            }
        } else {
            chunks.recv().await
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let mut bytes = batch[0].len();
        while bytes < WRITE_BATCH {
            match chunks.try_recv() {
                Ok(chunk) => {
                    bytes += chunk.len();
                    batch.push(chunk);
                }
                Err(_) => break,
            }
        }
        let Some(mut taken) = writer.take() else {
            return;
        };
        let span = tracing::Span::current();
        let written = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = batch
                .into_iter()
                .try_for_each(|chunk| taken.write_bytes(chunk));
            (taken, result)
        })
        .await;
        match written {
            Ok((back, Ok(()))) => writer = Some(back),
            Ok((back, Err(err))) => {
                tracing::warn!(image = %id, %err, "cache write failed; the download goes on uncached");
                // Dropping the writer rolls the fill back (on this thread: a small unlink).
                let _ = tokio::task::spawn_blocking(move || drop(back)).await;
                return;
            }
            // The runtime is going away: the writer was dropped with the closure.
            Err(_) => return,
        }
    }
    let Some(writer) = writer else { return };
    let ending = std::mem::take(&mut *lock(&outcome));
    let span = tracing::Span::current();
    let ended = tokio::task::spawn_blocking(move || {
        span.in_scope(|| match ending {
            Outcome::Complete => match writer.finish() {
                // The store logs the commit, with its duration and rate.
                Ok(record) => tracing::debug!(image = %id, size = record.size, "image cached"),
                Err(err) => tracing::warn!(image = %id, %err, "image not cached"),
            },
            Outcome::Failed(reason) => writer.abort(&reason),
            Outcome::Unfinished => writer.abort("the fill was stopped before the image ended"),
        })
    });
    let _ = ended.await;
}

/// How long a fill's source may pause before the bytes written are put in the file for its
/// followers (they are written a block at a time otherwise).
const FLUSH_WHEN_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// [`FillWriter::flush`] on a blocking thread; `None` when the fill ended on an error.
async fn flush(writer: Option<FillWriter>, id: &ImageId) -> Option<FillWriter> {
    let mut writer = writer?;
    let span = tracing::Span::current();
    let flushed = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let result = writer.flush();
        (writer, result)
    })
    .await;
    match flushed {
        Ok((writer, Ok(()))) => Some(writer),
        Ok((back, Err(err))) => {
            tracing::warn!(image = %id, %err, "cache write failed; the download goes on uncached");
            let _ = tokio::task::spawn_blocking(move || drop(back)).await;
            None
        }
        Err(_) => None,
    }
}
