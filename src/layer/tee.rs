//! The tee of a miss: the client gets each chunk as it arrives while a blocking task writes
//! the same chunks into the cache.
//!
//! The writer sits on tokio's blocking pool behind a small bounded channel, so a slow disk
//! slows the client a little rather than growing memory. A failure on the cache side ends the
//! writer (and drops its end of the channel); the client's stream carries on untouched.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::BoxError;
use crate::store::{lock, FillWriter};

/// Chunks in flight between the response and the cache writer.
const CHANNEL_CHUNKS: usize = 16;

/// How the upstream body ended, as far as the cache is concerned.
#[derive(Debug, Default)]
enum Outcome {
    /// The body was dropped before it ended (the client went away).
    #[default]
    Unfinished,
    /// Every byte arrived.
    Complete,
    /// The upstream failed or sent the wrong number of bytes.
    Failed(String),
}

/// The response's end of a fill.
struct FillSink {
    chunks: PollSender<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
}

impl FillSink {
    /// Starts the writer task for `writer` and returns the end that feeds it.
    fn start(writer: FillWriter) -> FillSink {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let outcome = Arc::new(Mutex::new(Outcome::Unfinished));
        let ended = Arc::clone(&outcome);
        tokio::task::spawn_blocking(move || write_fill(writer, rx, ended));
        FillSink {
            chunks: PollSender::new(tx),
            outcome,
        }
    }

    fn end(self, outcome: Outcome) {
        *lock(&self.outcome) = outcome;
    }
}

fn write_fill(
    mut writer: FillWriter,
    mut chunks: mpsc::Receiver<Bytes>,
    outcome: Arc<Mutex<Outcome>>,
) {
    while let Some(chunk) = chunks.blocking_recv() {
        if let Err(err) = writer.write(&chunk) {
            tracing::warn!(image = %writer.id(), %err, "cache write failed; the client's download goes on uncached");
            return;
        }
    }
    let id = writer.id().clone();
    match std::mem::take(&mut *lock(&outcome)) {
        Outcome::Complete => match writer.finish() {
            Ok(record) => tracing::info!(image = %id, size = record.size, "image cached"),
            Err(err) => tracing::warn!(image = %id, %err, "image not cached"),
        },
        Outcome::Failed(reason) => writer.abort(&reason),
        Outcome::Unfinished => writer.abort("the response was dropped before the image ended"),
    }
}

/// The body ended with more or fewer bytes than its `Content-Length`.
#[derive(Debug)]
pub(crate) struct LengthMismatch {
    expected: u64,
    received: u64,
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.received < self.expected {
            write!(
                f,
                "the image body ended after {} of {} bytes",
                self.received, self.expected
            )
        } else {
            write!(
                f,
                "the image body ran past its Content-Length of {} bytes",
                self.expected
            )
        }
    }
}

impl std::error::Error for LengthMismatch {}

pin_project! {
    /// The wrapped service's body, copied into the cache on its way to the client.
    pub(crate) struct TeeBody<B> {
        #[pin]
        inner: B,
        sink: Option<FillSink>,
        expected_len: Option<u64>,
        received: u64,
        done: bool,
    }
}

impl<B> TeeBody<B> {
    pub(crate) fn new(inner: B, writer: FillWriter, expected_len: Option<u64>) -> Self {
        TeeBody {
            inner,
            sink: Some(FillSink::start(writer)),
            expected_len,
            received: 0,
            done: false,
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // A slot for the next chunk first, so a chunk is never held back from the client or the
        // cache once it has arrived.
        if let Some(sink) = this.sink.as_mut() {
            if ready!(sink.chunks.poll_reserve(cx)).is_err() {
                *this.sink = None; // the writer gave up (a cache-side failure)
            }
        }
        let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
            Some(Err(err)) => {
                let err: BoxError = err.into();
                end(
                    this.sink,
                    Outcome::Failed(format!("the upstream body failed: {err}")),
                );
                *this.done = true;
                return Poll::Ready(Some(Err(err)));
            }
            None => {
                *this.done = true;
                if let Some(expected) = this.expected_len.filter(|n| *n != *this.received) {
                    let err = LengthMismatch {
                        expected,
                        received: *this.received,
                    };
                    end(this.sink, Outcome::Failed(err.to_string()));
                    return Poll::Ready(Some(Err(err.into())));
                }
                end(this.sink, Outcome::Complete);
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            *this.received += data.len() as u64;
            if let Some(expected) = this.expected_len.filter(|n| *this.received > *n) {
                let err = LengthMismatch {
                    expected,
                    received: *this.received,
                };
                end(this.sink, Outcome::Failed(err.to_string()));
                *this.done = true;
                return Poll::Ready(Some(Err(err.into())));
            }
            if let Some(sink) = this.sink.as_mut() {
                if sink.chunks.send_item(data.clone()).is_err() {
                    *this.sink = None;
                }
            }
            // hyper stops polling a body once its Content-Length is written, so the last
            // expected byte is the end as far as the fill is concerned.
            if Some(*this.received) == *this.expected_len {
                end(this.sink, Outcome::Complete);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.expected_len {
            Some(len) => SizeHint::with_exact(len.saturating_sub(self.received)),
            None => self.inner.size_hint(),
        }
    }
}

fn end(sink: &mut Option<FillSink>, outcome: Outcome) {
    if let Some(sink) = sink.take() {
        sink.end(outcome);
    }
}
