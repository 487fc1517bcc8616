//! A peer's answer as a fill's body, and what this node remembers of its peers ([`Ledger`]): a
//! failure mid-way is counted and rests the peer, and a whole copy is remembered, so a copy
//! that did not verify is known at the next ask.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future;

use bytes::Bytes;
use http_body::Frame;
use tower_image_cache::config::PEER_RATE_WINDOW;
use tower_image_cache::layer::BoxError;
use tower_image_cache::store::PeerFailure;
use tower_image_cache::{ImageCache, ImageId};

use crate::sync::lock;

/// How long a peer that failed is not asked again.
const FAILED_PEER_REST: Duration = Duration::from_secs(30);

/// How long the holders of an image read from the fleet's table are used before it is read
/// again: a fill's resumes moments later ask no query (nor a database that went away).
const HOLDERS_KEPT: Duration = Duration::from_secs(2);

/// What this node remembers of its peers.
#[derive(Clone)]
pub(super) struct Ledger {
    cache: ImageCache,
    /// Peers that failed lately, and when.
    failed: Arc<Mutex<HashMap<String, Instant>>>,
    /// The peer whose copy of an image was read to its end last: asked to fill that image
    /// again, this node learns the copy did not verify (the fill would have committed).
    delivered: Arc<Mutex<HashMap<ImageId, String>>>,
    /// The holders of images as the fleet's table named them lately.
    holders: Arc<Holders>,
}

/// The holders of images as the fleet's table named them, each list kept for a while.
pub(super) struct Holders {
    kept: Duration,
    lists: Mutex<HashMap<ImageId, (Instant, Vec<String>)>>,
}

impl Holders {
    pub(super) fn new(kept: Duration) -> Self {
        Holders {
            kept,
            lists: Mutex::default(),
        }
    }

    /// The holders of `image` read less than `kept` ago.
    pub(super) fn get(&self, image: &ImageId) -> Option<Vec<String>> {
        let lists = lock(&self.lists);
        let (read, holders) = lists.get(image)?;
        (read.elapsed() < self.kept).then(|| holders.clone())
    }

    /// The holders of `image` the table named just now (older lists are dropped).
    pub(super) fn put(&self, image: &ImageId, holders: &[String]) {
        let mut lists = lock(&self.lists);
        lists.retain(|_, (read, _)| read.elapsed() < self.kept);
        lists.insert(image.clone(), (Instant::now(), holders.to_vec()));
    }
}

impl Ledger {
    /// An empty ledger, counting failures into `cache`'s metrics.
    pub(super) fn new(cache: &ImageCache) -> Self {
        Ledger {
            cache: cache.clone(),
            failed: Arc::default(),
            delivered: Arc::default(),
            holders: Arc::new(Holders::new(HOLDERS_KEPT)),
        }
    }

    /// The holders of images the fleet's table named lately.
    pub(super) fn holders(&self) -> &Holders {
        &self.holders
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

/// A peer's body; a failure mid-way (the peer died, stalled, or came slower than its floor)
/// rests the peer, so the fill's resume asks another source, and its end is remembered (see
/// [`Ledger`]).
pub(super) struct PeerBody {
    answer: ByteStream,
    ledger: Ledger,
    peer: String,
    image: ImageId,
    pace: Option<Pace>,
}

impl PeerBody {
    /// `answer`'s body; with a `floor` (bytes per second), a window of [`PEER_RATE_WINDOW`]
    /// that brings fewer bytes than the floor allows ends it.
    pub(super) fn new(
        answer: reqwest::Response,
        ledger: Ledger,
        peer: &str,
        image: &ImageId,
        floor: Option<u64>,
    ) -> Self {
        PeerBody {
            answer: Box::pin(answer.bytes_stream()),
            ledger,
            peer: peer.to_owned(),
            image: image.clone(),
            pace: floor.map(Pace::new),
        }
    }

    /// The body's end when its peer came too slowly.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        let reason = self.pace.as_mut()?.check(cx)?;
        self.ledger.failed(&self.peer, PeerFailure::Slow);
        Some(reason.into())
    }
}

/// A floor under a peer's pace: the bytes of the current window, and when it ends.
struct Pace {
    /// Bytes per second.
    floor: u64,
    bytes: u64,
    ends: Pin<Box<tokio::time::Sleep>>,
}

impl Pace {
    fn new(floor: u64) -> Self {
        Pace {
            floor,
            bytes: 0,
            ends: Box::pin(tokio::time::sleep(PEER_RATE_WINDOW)),
        }
    }

    /// Why the peer is too slow, once a window ended with fewer bytes than the floor; else a
    /// new window begins (and the waker is set for its end).
    fn check(&mut self, cx: &mut Context<'_>) -> Option<String> {
        while self.ends.as_mut().poll(cx).is_ready() {
            let window = PEER_RATE_WINDOW.as_secs_f64();
            if (self.bytes as f64) < self.floor as f64 * window {
                return Some(format!(
                    "the peer sent {} bytes in {window} s, slower than peer_min_rate ({} KiB/s); \
                     the rest is read from another source",
                    self.bytes,
                    self.floor / 1024
                ));
            }
            self.bytes = 0;
            let next = tokio::time::Instant::now() + PEER_RATE_WINDOW;
            self.ends.as_mut().reset(next);
        }
        None
    }
}

impl http_body::Body for PeerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.answer.as_mut().poll_next(cx);
        if let (Poll::Ready(Some(Ok(chunk))), Some(pace)) = (&polled, self.pace.as_mut()) {
            pace.bytes += chunk.len() as u64;
        }
        if matches!(polled, Poll::Pending | Poll::Ready(Some(Ok(_)))) {
            if let Some(slow) = self.too_slow(cx) {
                return Poll::Ready(Some(Err(slow)));
            }
        }
        match polled {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_kept_a_while_per_image() {
        let holders = Holders::new(Duration::from_millis(200));
        let (one, two) = (ImageId::new("one").unwrap(), ImageId::new("two").unwrap());
        assert_eq!(holders.get(&one), None);
        holders.put(&one, &["http://n1:9292".to_owned()]);
        holders.put(&two, &[]);
        assert_eq!(holders.get(&one), Some(vec!["http://n1:9292".to_owned()]));
        assert_eq!(holders.get(&two), Some(vec![]), "none is an answer too");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(holders.get(&one), None, "read again after a while");
        holders.put(&two, &["http://n2:9292".to_owned()]);
        assert_eq!(lock(&holders.lists).len(), 1, "the old list was dropped");
    }
}
