//! [`CacheBody`]: the body of every response the cache's layers give, and the bounds they ask of
//! the wrapped service's body.

mod bounds;
mod relay;

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::store::{FillFollower, ImageReader};

pub use bounds::BoxError;
pub(crate) use bounds::ResponseBody;
pub(crate) use relay::RelayBody;

pin_project! {
    /// The body of every response that passes the cache's layers: the wrapped service's own
    /// body, a cached image streamed from its file, a filling miss relayed to its client, a fill
    /// followed from its growing file, or an answer of the cache itself (management JSON).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Hit { reader: ImageReader },
        Relay { #[pin] body: RelayBody },
        Follow { reader: FillFollower },
        Full { data: Option<Bytes> },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        CacheBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn hit(reader: ImageReader) -> Self {
        CacheBody {
            kind: Kind::Hit { reader },
        }
    }

    pub(crate) fn relay(body: RelayBody) -> Self {
        CacheBody {
            kind: Kind::Relay { body },
        }
    }

    pub(crate) fn follow(reader: FillFollower) -> Self {
        CacheBody {
            kind: Kind::Follow { reader },
        }
    }

    pub(crate) fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub(crate) fn full(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Full {
                data: Some(data).filter(|d| !d.is_empty()),
            },
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Hit { .. } => "Hit",
            Kind::Relay { .. } => "Relay",
            Kind::Follow { .. } => "Follow",
            Kind::Full { .. } => "Full",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CacheBody<B>
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
        match self.project().kind.project() {
            KindProj::Inner { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|f| {
                    f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                }))
            }
            KindProj::Hit { reader } => {
                let chunk = ready!(reader.poll_chunk(cx));
                Poll::Ready(chunk.map(|c| c.map(Frame::data).map_err(Into::into)))
            }
            KindProj::Relay { body } => body.poll_frame(cx),
            KindProj::Follow { reader } => {
                let chunk = ready!(reader.poll_chunk(cx));
                Poll::Ready(chunk.map(|c| c.map(Frame::data).map_err(Into::into)))
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Hit { reader } => reader.remaining() == 0,
            Kind::Relay { body } => body.is_end_stream(),
            Kind::Follow { reader } => reader.remaining() == 0,
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Hit { reader } => SizeHint::with_exact(reader.remaining()),
            Kind::Relay { body } => body.size_hint(),
            Kind::Follow { reader } => SizeHint::with_exact(reader.remaining()),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
