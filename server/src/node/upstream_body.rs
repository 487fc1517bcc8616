//! The bodies of a forwarded exchange: a request body that says when it has been sent (the
//! response timeout runs from then), and a response body that fails when the upstream sends
//! nothing for `upstream_idle_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use tower_image_cache::layer::BoxError;
use tower_image_cache::store::{UpstreamFailure, UpstreamPhase};
use tower_image_cache::ImageCache;

/// A request body that sends on `sent` once its last frame is out.
pub(crate) struct Announced<B> {
    inner: B,
    sent: Option<oneshot::Sender<()>>,
}

impl<B: Body> Announced<B> {
    pub(crate) fn new(inner: B) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut sent = Some(tx);
        // An empty body may never be polled: it is sent with the head.
        if inner.is_end_stream() {
            if let Some(tx) = sent.take() {
                let _ = tx.send(());
            }
        }
        (Announced { inner, sent }, rx)
    }
}

impl<B> Body for Announced<B>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(tx) = self.sent.take() {
                    let _ = tx.send(());
                }
            }
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                if let Some(tx) = self.sent.take() {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails (logged, counted) when no frame comes for `limit`.
pub(crate) struct IdleLimited<B> {
    inner: B,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    upstream: String,
    cache: Option<ImageCache>,
}

impl<B> IdleLimited<B> {
    pub(crate) fn new(
        inner: B,
        limit: Duration,
        upstream: String,
        cache: Option<ImageCache>,
    ) -> Self {
        IdleLimited {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            upstream,
            cache,
        }
    }
}

impl<B> Body for IdleLimited<B>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    if let Some(cache) = &this.cache {
                        cache.count_upstream_failure(UpstreamFailure::Timeout(UpstreamPhase::Idle));
                    }
                    let seconds = this.limit.as_secs_f64();
                    tracing::warn!(
                        upstream = %this.upstream,
                        phase = "idle",
                        limit_seconds = seconds,
                        "the upstream image API sent nothing of a body for the idle limit; ending it"
                    );
                    let message = format!(
                        "the upstream image API sent no byte for {seconds} s (upstream_idle_timeout)"
                    );
                    Poll::Ready(Some(Err(message.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
