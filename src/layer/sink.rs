//! The cache writer's end of a fill (`tee.rs` feeds it): a task appending the chunks to the
//! file in batches, each batch on a blocking thread borrowed for its write only, and putting the
//! bytes in the file for the fill's followers whenever its source pauses.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::store::{FillError, FillWriter};
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
            // `None`: the writer gave up (it said why) or the runtime is going away.
            let _ = write_fill(writer, rx, ended).await;
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

/// The writer's task: batches of chunks written on blocking threads, whole pages flushed when
/// the source pauses, then the verdict; `None` when a step failed (the fill was rolled back).
async fn write_fill(
    mut writer: FillWriter,
    mut chunks: mpsc::Receiver<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
) -> Option<()> {
    let id = writer.id().clone();
    loop {
        let first = if writer.has_unflushed() {
            match tokio::time::timeout(FLUSH_WHEN_IDLE, chunks.recv()).await {
                Ok(received) => received,
                Err(_idle) => {
                    writer = on_blocking(writer, &id, FillWriter::flush).await?;
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
        writer = on_blocking(writer, &id, move |writer| {
            batch
                .into_iter()
                .try_for_each(|chunk| writer.write_bytes(chunk))
        })
        .await?;
    }
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
    Some(())
}

/// Runs `step` on the writer on a blocking thread borrowed for it; `None` when it failed (the
/// fill is rolled back, and the download goes on uncached) or the runtime is going away.
async fn on_blocking(
    mut writer: FillWriter,
    id: &ImageId,
    step: impl FnOnce(&mut FillWriter) -> Result<(), FillError> + Send + 'static,
) -> Option<FillWriter> {
    let span = tracing::Span::current();
    let stepped = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let result = step(&mut writer);
        (writer, result)
    })
    .await;
    match stepped {
        Ok((writer, Ok(()))) => Some(writer),
        Ok((back, Err(err))) => {
            tracing::warn!(image = %id, %err, "cache write failed; the download goes on uncached");
            // Dropping the writer rolls the fill back (on this thread: a small unlink).
            let _ = tokio::task::spawn_blocking(move || drop(back)).await;
            None
        }
        // The runtime is going away: the writer was dropped with the closure.
        Err(_) => None,
    }
}

/// How long a fill's source may pause before the bytes written are put in the file for its
/// followers (they are written a block at a time otherwise).
const FLUSH_WHEN_IDLE: std::time::Duration = std::time::Duration::from_millis(20);
