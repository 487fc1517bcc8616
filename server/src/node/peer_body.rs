//! A peer's answer as a fill's body: a failure mid-way is counted and rests the peer, and a
//! whole copy is remembered, so a copy that did not verify is known at the next ask.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tower_image_cache::layer::BoxError;
use tower_image_cache::store::PeerFailure;
use tower_image_cache::ImageId;

use super::peers::Peers;

type ByteStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static>>;

/// A peer's body; a failure mid-way (the peer died or stalled) rests the peer, so the fill's
/// resume asks another source, and its end is remembered (see `Peers::delivered`).
pub(super) struct PeerBody {
    answer: ByteStream,
    peers: Peers,
    peer: String,
    image: ImageId,
}

impl PeerBody {
    pub(super) fn new(
        answer: reqwest::Response,
        peers: Peers,
        peer: &str,
        image: &ImageId,
    ) -> Self {
        PeerBody {
            answer: Box::pin(answer.bytes_stream()),
            peers,
            peer: peer.to_owned(),
            image: image.clone(),
        }
    }
}

impl http_body::Body for PeerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.answer.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(err))) => {
                self.peers.failed(&self.peer, PeerFailure::Cut);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                let (image, peer) = (self.image.clone(), self.peer.clone());
                self.peers.delivered(image, peer);
                Poll::Ready(None)
            }
            other => other.map(|chunk| chunk.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }
}
