//! Fills from the fleet's own nodes (`[cache_server] peer_token`): the peer route that serves
//! what this node holds to the other nodes, and the source that answers this node's fills from
//! them before the upstream is asked.
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
use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use tower_image_cache::layer::{BoxError, FillRequest, FillSource, GlanceError};
use tower_image_cache::store::ImageReader;
use tower_image_cache::{ImageCache, ImageId};

use crate::causes::error_chain;

/// The peer route: `GET /peer/v1/images/{id}` (with `Range: bytes=N-` for a resumed fill).
pub(crate) const PEER_ROUTE: &str = "/peer/v1/images/{id}";

/// How long a peer that failed is not asked again.
const FAILED_PEER_REST: Duration = Duration::from_secs(30);

/// How long the fleet's database and a peer's response head may take before the next source
/// is asked.
const PEER_PATIENCE: Duration = Duration::from_secs(5);

/// The peer route, admitting only the fleet's token.
pub(crate) fn route(cache: &ImageCache, token: &str) -> Router {
    let held = Held {
        cache: cache.clone(),
        token: Arc::from(token),
    };
    Router::new()
        .route(PEER_ROUTE, get(serve_held))
        .with_state(held)
}

#[derive(Clone)]
struct Held {
    cache: ImageCache,
    token: Arc<str>,
}

/// Serves a committed image of this node to another node of the fleet; anyone else gets 401 or
/// 403, whatever the node holds, so the route reveals nothing to a tenant.
async fn serve_held(
    State(held): State<Held>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let refuse = |status: StatusCode, message: &str| {
        GlanceError::new(status, message)
            .response_for::<Body>(&headers)
            .map(Body::new)
    };
    match headers.get("x-auth-token") {
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "This route serves the fleet's own nodes: send the fleet's peer_token as \
                 X-Auth-Token.",
            )
        }
        Some(token) if !same_secret(token.as_bytes(), held.token.as_bytes()) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "This route serves the fleet's own nodes only; download images through \
                 /v2/images/{id}/file.",
            )
        }
        Some(_) => {}
    }
    let Ok(id) = ImageId::new(&id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "That is not an image id this cache keeps.",
        );
    };
    let from = match headers.get(header::RANGE).map(resumed_from) {
        None => 0,
        Some(Some(from)) => from,
        Some(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "The peer route answers the whole image or `Range: bytes=N-` only.",
            )
        }
    };
    let opening = id.clone();
    let reader = match held
        .cache
        .blocking(move |c| c.open_for_read(&opening))
        .await
    {
        Ok(Some(reader)) => reader,
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("This node does not hold image {id}."),
            )
        }
        Err(err) => {
            tracing::warn!(image = %id, %err, "a peer asked for an image that could not be opened");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("This node cannot read image {id} now."),
            );
        }
    };
    let size = reader.record().size;
    if from > 0 && from >= size {
        let mut response = refuse(
            StatusCode::RANGE_NOT_SATISFIABLE,
            &format!("Image {id} has {size} bytes."),
        );
        let whole = HeaderValue::from_str(&format!("bytes */{size}")).expect("header text");
        response.headers_mut().insert(header::CONTENT_RANGE, whole);
        return response;
    }
    let (status, reader) = if from > 0 {
        (
            StatusCode::PARTIAL_CONTENT,
            reader.limit_to(from..=size - 1),
        )
    } else {
        (StatusCode::OK, reader)
    };
    tracing::debug!(image = %id, from, "serving a peer");
    let length = reader.remaining();
    let mut response = Response::new(Body::new(HeldBody(reader)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {from}-{}/{size}", size - 1);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("header text"),
        );
    }
    response
}

/// `bytes=N-`: where a resumed fill asks to start.
fn resumed_from(range: &HeaderValue) -> Option<u64> {
    let text = range.to_str().ok()?.trim().strip_prefix("bytes=")?;
    text.strip_suffix('-')?.parse().ok()
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let differences = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == expected.len() && differences == 0
}

/// A committed image's bytes, as a response body.
struct HeldBody(ImageReader);

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.remaining())
    }
}

/// This node's fills, asked of the fleet's other nodes first.
#[derive(Clone)]
pub(crate) struct Peers {
    cache: ImageCache,
    token: Arc<str>,
    http: reqwest::Client,
    /// Peers that failed lately, and when.
    failed: Arc<Mutex<HashMap<String, Instant>>>,
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
        })
    }

    /// The answer of a peer that holds the image `request` fills (from the byte its `Range`
    /// names), or `None` (not a fill, no peer holds it, or none answered): the upstream is
    /// asked then.
    pub(crate) fn answer(
        &self,
        request: &Request<Body>,
    ) -> impl std::future::Future<Output = Option<Response<Body>>> + Send + 'static {
        // Read before the wait: a request (its body) is not `Sync`.
        let id = request
            .extensions()
            .get::<FillRequest>()
            .map(|fill| fill.image().clone());
        let range = request.headers().get(header::RANGE).cloned();
        let peers = self.clone();
        async move { peers.answer_fill(id?, range).await }
    }

    async fn answer_fill(&self, id: ImageId, range: Option<HeaderValue>) -> Option<Response<Body>> {
        let fleet = self.cache.fleet()?;
        let holders = match tokio::time::timeout(PEER_PATIENCE, fleet.nodes_caching(&id)).await {
            Ok(Ok(holders)) => holders,
            Ok(Err(err)) => {
                tracing::warn!(image = %id, %err, "the fleet's database did not say which nodes hold the image; filling from the upstream");
                return None;
            }
            Err(_) => {
                tracing::warn!(image = %id, "the fleet's database did not answer in time; filling from the upstream");
                return None;
            }
        };
        for peer in holders {
            if Some(peer.as_str()) == fleet.this_node() || self.resting(&peer) {
                continue;
            }
            match self.ask(&peer, &id, range.as_ref()).await {
                Ok(response) => {
                    let from = range.as_ref().and_then(resumed_from).unwrap_or(0);
                    tracing::info!(image = %id, %peer, from, "filling from a peer");
                    return Some(response);
                }
                Err(reason) => {
                    tracing::warn!(image = %id, %peer, %reason, "a peer could not serve the image; asking the next source");
                    self.rest(&peer);
                }
            }
        }
        None
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
        let failed = Arc::clone(&self.failed);
        let peer = peer.to_owned();
        let body = PeerBody {
            answer: Box::pin(answer.bytes_stream()),
            on_error: Some(Box::new(move || {
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(peer, Instant::now());
            })),
        };
        *response.body_mut() = Body::new(body);
        response.extensions_mut().insert(FillSource::Peer);
        Ok(response)
    }

    fn resting(&self, peer: &str) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|_, when| when.elapsed() < FAILED_PEER_REST);
        failed.contains_key(peer)
    }

    fn rest(&self, peer: &str) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.insert(peer.to_owned(), Instant::now());
    }
}

type ByteStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static>>;

/// A peer's body; a failure mid-way (the peer died or stalled) rests the peer, so the fill's
/// resume asks another source.
struct PeerBody {
    answer: ByteStream,
    on_error: Option<Box<dyn FnOnce() + Send + Sync>>,
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
                if let Some(rest) = self.on_error.take() {
                    rest();
                }
                Poll::Ready(Some(Err(err.into())))
            }
            other => other.map(|chunk| chunk.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }
}
