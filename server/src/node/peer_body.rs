//! A peer's answer as a fill's body, and what this node remembers of its peers ([`Ledger`]): a
//! failure mid-way is counted and rests the peer, and a whole copy is remembered, so a copy
//! that did not verify is known at the next ask.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tower_image_cache::layer::BoxError;
use tower_image_cache::store::PeerFailure;
use tower_image_cache::{ImageCache, ImageId};

use crate::sync::lock;

/// How long a peer that failed is not asked again.
const FAILED_PEER_REST: Duration = Duration::from_secs(30);

/// What this node remembers of its peers.
#[derive(Clone)]
pub(super) struct Ledger {
    cache: ImageCache,
    /// Peers that failed lately, and when.
    failed: Arc<Mutex<HashMap<String, Instant>>>,
    /// The peer whose copy of an image was read to its end last: asked to fill that image
    /// again, this node learns the copy did not verify (the fill would have committed).
    delivered: Arc<Mutex<HashMap<ImageId, String>>>,
}

impl Ledger {
    /// An empty ledger, counting failures into `cache`'s metrics.
    pub(super) fn new(cache: &ImageCache) -> Self {
        Ledger {
            cache: cache.clone(),
            failed: Arc::default(),
            delivered: Arc::default(),
        }
    }

    /// Whether `peer` failed within [`FAILED_PEER_REST`].
    pub(super) fn resting(&self, peer: &str) -> bool {
        let mut failed = lock(&self.failed);
        failed.retain(|_, when| when.elapsed() < FAILED_PEER_REST);
        failed.contains_key(peer)
    }

    /// `peer` failed (counted): it is left alone for [`FAILED_PEER_REST`].
    pub(super) fn failed(&self, peer: &str, failure: PeerFailure) {
        self.cache.count_peer_failure(failure);
        self.rest(peer);
    }

    /// Leaves `peer` alone for [`FAILED_PEER_REST`].
    pub(super) fn rest(&self, peer: &str) {
        lock(&self.failed).insert(peer.to_owned(), Instant::now());
    }

    /// `peer` sent its whole copy of `image`.
    fn delivered(&self, image: ImageId, peer: String) {
        lock(&self.delivered).insert(image, peer);
    }

    /// The peer that sent its whole copy of `image` last, forgotten.
    pub(super) fn take_delivered(&self, image: &ImageId) -> Option<String> {
        lock(&self.delivered).remove(image)
    }
}

type ByteStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static>>;

/// A peer's body; a failure mid-way (the peer died or stalled) rests the peer, so the fill's
/// resume asks another source, and its end is remembered (see [`Ledger`]).
pub(super) struct PeerBody {
    answer: ByteStream,
    ledger: Ledger,
    peer: String,
    image: ImageId,
}

impl PeerBody {
    pub(super) fn new(
        answer: reqwest::Response,
        ledger: Ledger,
        peer: &str,
        image: &ImageId,
    ) -> Self {
        PeerBody {
            answer: Box::pin(answer.bytes_stream()),
            ledger,
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
                self.ledger.failed(&self.peer, PeerFailure::Cut);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                let (image, peer) = (self.image.clone(), self.peer.clone());
                self.ledger.delivered(image, peer);
                Poll::Ready(None)
            }
            other => other.map(|chunk| chunk.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }
}
