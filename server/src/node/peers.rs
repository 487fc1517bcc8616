//! Fills from the fleet's own nodes (`[cache_server] peer_token`): this node's fills are asked
//! of the nodes that hold the image, or of the node the fleet's table says is reading it now,
//! before the upstream; the peer route (`peer_route.rs`) serves the other side.
//!
//! A peer's bytes are held to the image's checksum from the upstream's metadata, as the
//! upstream's are, and only requests the cache layer marked as its fill ([`FillRequest`]: the
//! caller was admitted by the upstream) are answered from peers. A peer that fails is left
//! alone for a while; the fill's resume (`Range: bytes=N-`) then goes to the next holder or to
//! the upstream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tower_image_cache::layer::{BoxError, FillRequest, FillSource};
use tower_image_cache::store::{FillClaim, Fleet, FILL_CLAIM_LIFETIME};
use tower_image_cache::{ImageCache, ImageId};

use super::peer_route::resumed_from;
use crate::causes::error_chain;
use crate::sync::lock;

/// How long a peer that failed is not asked again.
const FAILED_PEER_REST: Duration = Duration::from_secs(30);

/// How long the fleet's database and a peer's response head may take before the next source
/// is asked.
const PEER_PATIENCE: Duration = Duration::from_secs(5);

/// This node's fills, asked of the fleet's other nodes first.
#[derive(Clone)]
pub(crate) struct Peers {
    cache: ImageCache,
    token: Arc<str>,
    http: reqwest::Client,
    /// Peers that failed lately, and when.
    failed: Arc<Mutex<HashMap<String, Instant>>>,
    /// The peer whose copy of an image was read to its end last: asked to fill that image
    /// again, this node learns the copy did not verify (the fill would have committed).
    delivered: Arc<Mutex<HashMap<ImageId, String>>>,
}

impl Peers {
    /// Fills answered by the nodes that hold the image, with `token`; a peer that sends
    /// nothing for `idle` is given up.
    pub(crate) fn new(
        cache: &ImageCache,
        token: &str,
        idle: Option<Duration>,
    ) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .no_proxy();
        if let Some(idle) = idle {
            http = http.read_timeout(idle);
        }
        let http = http
            .build()
            .map_err(|err| format!("the client of the fleet's peers cannot be set up: {err}"))?;
        Ok(Peers {
            cache: cache.clone(),
            token: Arc::from(token),
            http,
            failed: Arc::default(),
            delivered: Arc::default(),
        })
    }

    /// Where the fill `request` asks for (if it is one) is read from: a peer that holds the
    /// image, the peer the fleet's table says reads it now, or the upstream, with this node's
    /// claim on the image when it is the one to read it.
    pub(crate) fn answer(
        &self,
        request: &Request<Body>,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        // Read before the wait: a request (its body) is not `Sync`.
        let id = request
            .extensions()
            .get::<FillRequest>()
            .map(|fill| fill.image().clone());
        let range = request.headers().get(header::RANGE).cloned();
        let peers = self.clone();
        async move {
            match id {
                Some(id) => peers.answer_fill(id, range).await,
                None => Answer::Upstream(None),
            }
        }
    }

    async fn answer_fill(&self, id: ImageId, range: Option<HeaderValue>) -> Answer {
        let Some(fleet) = self.cache.fleet() else {
            return Answer::Upstream(None);
        };
        let asked = tokio::time::timeout(PEER_PATIENCE, fleet.nodes_caching(&id)).await;
        let holders = match asked {
            Ok(Ok(holders)) => holders,
            Ok(Err(err)) => {
                tracing::warn!(image = %id, %err, "the fleet's database did not say which nodes hold the image; filling from the upstream");
                return Answer::Upstream(None);
            }
            Err(_) => {
                tracing::warn!(image = %id, "the fleet's database did not answer in time; filling from the upstream");
                return Answer::Upstream(None);
            }
        };
        let delivered = lock(&self.delivered).remove(&id);
        if let (Some(peer), None) = (delivered, &range) {
            // Its whole copy came here and yet the image is asked again: it did not verify.
            tracing::warn!(image = %id, %peer, "the copy a peer sent did not verify here (rotten on its disk?); asking other sources");
            self.rest(&peer);
        }
        for peer in holders {
            if Some(peer.as_str()) == fleet.this_node() || self.resting(&peer) {
                continue;
            }
            if let Some(response) = self.ask_holder(&peer, &id, range.as_ref()).await {
                return Answer::Peer(response);
            }
        }
        if range.is_some() {
            // A resume: the rest from the upstream, whoever reads the image.
            return Answer::Upstream(None);
        }
        match tokio::time::timeout(PEER_PATIENCE, fleet.claim_fill(&id)).await {
            Ok(Ok(FillClaim::Ours)) => Answer::Upstream(Some(Claim::hold(fleet, id))),
            Ok(Ok(FillClaim::Theirs(reader))) => match self.follow(&reader, &id).await {
                Some(response) => Answer::Peer(response),
                None => Answer::Upstream(None),
            },
            Ok(Ok(_)) => Answer::Upstream(None),
            Ok(Err(err)) => {
                tracing::warn!(image = %id, %err, "the fill could not be claimed in the fleet's database; filling from the upstream");
                Answer::Upstream(None)
            }
            Err(_) => Answer::Upstream(None),
        }
    }

    /// `peer`'s copy of `id` (from `range`), or `None` after logging why not and resting it.
    async fn ask_holder(
        &self,
        peer: &str,
        id: &ImageId,
        range: Option<&HeaderValue>,
    ) -> Option<Response<Body>> {
        match self.ask(peer, id, range).await {
            Ok(response) => {
                let from = range.and_then(resumed_from).unwrap_or(0);
                tracing::info!(image = %id, %peer, from, "filling from a peer");
                Some(response)
            }
            Err(reason) => {
                tracing::warn!(image = %id, %peer, %reason, "a peer could not serve the image; asking the next source");
                self.rest(peer);
                None
            }
        }
    }

    /// The fill `reader` claimed, followed: it may not have begun yet (its upstream's answer
    /// not come), so a "not here" is asked again for a while.
    async fn follow(&self, reader: &str, id: &ImageId) -> Option<Response<Body>> {
        if self.resting(reader) {
            return None;
        }
        let deadline = Instant::now() + PEER_PATIENCE;
        loop {
            match self.ask(reader, id, None).await {
                Ok(response) => {
                    tracing::info!(image = %id, peer = %reader, "following a peer's fill");
                    return Some(response);
                }
                Err(reason) if reason.contains("404") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(reason) => {
                    tracing::warn!(image = %id, peer = %reader, %reason, "the peer reading the image could not be followed; filling from the upstream");
                    self.rest(reader);
                    return None;
                }
            }
        }
    }

    /// `peer`'s answer for `id` when it is the image (or the range asked), else why not.
    async fn ask(
        &self,
        peer: &str,
        id: &ImageId,
        range: Option<&HeaderValue>,
    ) -> Result<Response<Body>, String> {
        let url = format!("{}/peer/v1/images/{id}", peer.trim_end_matches('/'));
        let mut asking = self.http.get(&url).header("x-auth-token", &*self.token);
        if let Some(range) = range {
            asking = asking.header(header::RANGE, range);
        }
        let answer = match tokio::time::timeout(PEER_PATIENCE, asking.send()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(error_chain(&err)),
            Err(_) => return Err(format!("no answer within {} s", PEER_PATIENCE.as_secs())),
        };
        let expected = if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if answer.status() != expected {
            return Err(format!("it answered {}", answer.status()));
        }
        let mut response = Response::new(Body::empty());
        *response.status_mut() = answer.status();
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::CONTENT_TYPE,
        ] {
            if let Some(value) = answer.headers().get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        let body = PeerBody {
            answer: Box::pin(answer.bytes_stream()),
            peers: self.clone(),
            peer: peer.to_owned(),
            image: id.clone(),
        };
        *response.body_mut() = Body::new(body);
        response.extensions_mut().insert(FillSource::Peer);
        Ok(response)
    }

    fn resting(&self, peer: &str) -> bool {
        let mut failed = lock(&self.failed);
        failed.retain(|_, when| when.elapsed() < FAILED_PEER_REST);
        failed.contains_key(peer)
    }

    fn rest(&self, peer: &str) {
        lock(&self.failed).insert(peer.to_owned(), Instant::now());
    }
}

/// Where a request the node forwards is read from.
pub(crate) enum Answer {
    /// A peer's copy, or its fill followed.
    Peer(Response<Body>),
    /// The upstream; with this node's claim of the image when its fill is the fleet's one read.
    Upstream(Option<Claim>),
}

/// This node's claim of an image's fill in the fleet's table, renewed while it is held and
/// released when dropped (with the upstream's body it rides on: the fill is over).
pub(crate) struct Claim {
    heartbeat: tokio::task::JoinHandle<()>,
    release: Option<(Fleet, ImageId)>,
}

impl Claim {
    fn hold(fleet: Fleet, id: ImageId) -> Self {
        tracing::info!(image = %id, "reading the image from the upstream for the fleet");
        let (renewing, image) = (fleet.clone(), id.clone());
        let heartbeat = tokio::spawn(async move {
            let every = FILL_CLAIM_LIFETIME / 3;
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = renewing.renew_fill(&image).await {
                    tracing::warn!(image = %image, %err, "the fill's claim could not be renewed");
                }
            }
        });
        Claim {
            heartbeat,
            release: Some((fleet, id)),
        }
    }

    /// `response`'s body, holding this claim until it is read or dropped.
    pub(crate) fn ride(self, response: Response<Body>) -> Response<Body> {
        response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _held = &self;
                frame
            }))
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some((fleet, id)) = self.release.take() {
            // A moment for the commit's row to reach the fleet's table, so a node asking in
            // between finds the image held rather than unclaimed. Outside a runtime (the node
            // stopping) the claim lapses by itself.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                tokio::time::sleep(CLAIM_AFTERGLOW).await;
                if let Err(err) = fleet.release_fill(&id).await {
                    tracing::warn!(image = %id, %err, "the fill's claim could not be released; it lapses by itself");
                }
            });
        }
    }
}

/// How long a claim stays after its fill's body ended.
const CLAIM_AFTERGLOW: Duration = Duration::from_secs(2);

type ByteStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static>>;

/// A peer's body; a failure mid-way (the peer died or stalled) rests the peer, so the fill's
/// resume asks another source, and its end is remembered (see `Peers::delivered`).
struct PeerBody {
    answer: ByteStream,
    peers: Peers,
    peer: String,
    image: ImageId,
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
                self.peers.rest(&self.peer);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                let (image, peer) = (self.image.clone(), self.peer.clone());
                lock(&self.peers.delivered).insert(image, peer);
                Poll::Ready(None)
            }
            other => other.map(|chunk| chunk.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }
}
