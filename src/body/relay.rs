//! [`RelayBody`]: what the client that started a fill reads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use super::bounds::BoxError;
use crate::store::FillFollower;

/// What the client that started a fill reads: the chunks the fill task relays, then, if it fell
/// behind, the rest from the fill's file.
#[derive(Debug)]
pub(crate) struct RelayBody {
    chunks: mpsc::Receiver<Result<Bytes, BoxError>>,
    handed_off: Option<oneshot::Receiver<FillFollower>>,
    follower: Option<FillFollower>,
    remaining: Option<u64>,
    done: bool,
}

impl RelayBody {
    /// The body fed by `chunks`; a fill that hands the client over to its file sends the
    /// follower through `handed_off` before it closes `chunks`. `expected_len` is the image's
    /// length when known: a body that stops short of it ends with an error.
    pub(crate) fn new(
        chunks: mpsc::Receiver<Result<Bytes, BoxError>>,
        handed_off: oneshot::Receiver<FillFollower>,
        expected_len: Option<u64>,
    ) -> Self {
        RelayBody {
            chunks,
            handed_off: Some(handed_off),
            follower: None,
            remaining: expected_len,
            done: false,
        }
    }

    fn took(&mut self, chunk: &Bytes) {
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(follower) = self.follower.as_mut() {
            let next = std::task::ready!(follower.poll_chunk(cx));
            return Poll::Ready(match next {
                Some(Ok(chunk)) => {
                    self.took(&chunk);
                    Some(Ok(Frame::data(chunk)))
                }
                Some(Err(err)) => {
                    self.done = true;
                    Some(Err(err.into()))
                }
                None => {
                    self.done = true;
                    None
                }
            });
        }
        match self.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.took(&chunk);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(err))) => {
                self.done = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                // The fill handed this client over to its file (sent before the channel closed).
                if let Some(mut handed_off) = self.handed_off.take() {
                    if let Poll::Ready(Ok(follower)) = Pin::new(&mut handed_off).poll(cx) {
                        self.follower = Some(follower);
                        return self.poll_frame(cx);
                    }
                }
                self.done = true;
                // A fill task that stopped early (the runtime shutting down) is an error, never
                // a short body that looks whole.
                match self.remaining.filter(|n| *n > 0) {
                    Some(n) => Poll::Ready(Some(Err(format!(
                        "the download stopped {n} bytes short"
                    )
                    .into()))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
