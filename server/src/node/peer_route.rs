//! The peer route (`[cache_server] peer_token`): what this node holds, or is filling, served to
//! the fleet's other nodes, and to nobody else.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use tower_image_cache::layer::GlanceError;
use tower_image_cache::store::{CheckedReader, FillFollower};
use tower_image_cache::{ImageCache, ImageId};

use super::peer_identity::{Admission, Refused};

/// The peer route: `GET /peer/v1/images/{id}` (with `Range: bytes=N-` for a resumed fill).
pub(crate) const PEER_ROUTE: &str = "/peer/v1/images/{id}";

/// The peer route, admitting only the fleet's nodes.
pub(crate) fn route(cache: &ImageCache, admission: Admission) -> Router {
    let held = Held {
        cache: cache.clone(),
        admission,
    };
    Router::new()
        .route(PEER_ROUTE, get(serve_held))
        .route(super::rot::REPORT_ROUTE, post(reported))
        .with_state(held)
}

/// A peer's report that this node's copy of an image did not verify there.
async fn reported(
    State(held): State<Held>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Err(Refused(status, message)) = held.admission.admit(&headers).await {
        return GlanceError::new(status, message)
            .response_for::<Body>(&headers)
            .map(Body::new);
    }
    match ImageId::new(&id) {
        Ok(id) => super::rot::check_reported(&held.cache, &id).await,
        Err(_) => GlanceError::new(
            StatusCode::BAD_REQUEST,
            "That is not an image id this cache keeps.",
        )
        .response_for::<Body>(&headers)
        .map(Body::new),
    }
}

#[derive(Clone)]
struct Held {
    cache: ImageCache,
    admission: Admission,
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
    if let Err(Refused(status, message)) = held.admission.admit(&headers).await {
        return refuse(status, message);
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
    match open(&held.cache, &id, from).await {
        Ok(Some(body)) => body.response(from),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            &format!("This node neither holds image {id} nor is filling it."),
        ),
        Err(Unreadable::Past(size)) => {
            let mut response = refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("Image {id} has {size} bytes."),
            );
            let whole = HeaderValue::from_str(&format!("bytes */{size}")).expect("header text");
            response.headers_mut().insert(header::CONTENT_RANGE, whole);
            response
        }
        Err(Unreadable::Failed(err)) => {
            tracing::warn!(image = %id, %err, "a peer asked for an image that could not be read");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("This node cannot read image {id} now."),
            )
        }
    }
}

/// Why an image this node has cannot be served from a byte.
enum Unreadable {
    /// The byte is past its end (its size).
    Past(u64),
    /// Opening it failed.
    Failed(String),
}

/// The image `id` from byte `from`: committed, else the fill of it in progress (followed at
/// the fill's pace); `None` when this node has neither.
async fn open(cache: &ImageCache, id: &ImageId, from: u64) -> Result<Option<Shared>, Unreadable> {
    let opening = id.clone();
    let opened = cache
        .blocking(move |c| -> std::io::Result<Option<Shared>> {
            match c.open_checked(&opening)? {
                Some(reader) => Ok(Some(Shared::Held(reader))),
                None => Ok(c.follow(&opening)?.map(Shared::Filling)),
            }
        })
        .await
        .map_err(|err| Unreadable::Failed(err.to_string()))?;
    let Some(shared) = opened else {
        return Ok(None);
    };
    let size = shared.size();
    if from > 0 && from >= size {
        return Err(Unreadable::Past(size));
    }
    Ok(Some(match shared {
        Shared::Held(reader) => Shared::Held(reader.starting_at(from)),
        Shared::Filling(follower) => Shared::Filling(follower.starting_at(from)),
    }))
}

/// `bytes=N-`: where a resumed fill asks to start.
pub(crate) fn resumed_from(range: &HeaderValue) -> Option<u64> {
    let text = range.to_str().ok()?.trim().strip_prefix("bytes=")?;
    text.strip_suffix('-')?.parse().ok()
}

/// An image's bytes served to a peer: committed (each block checked against its fill's sums,
/// so a copy that rotted on the disk stops before its rotten block), or being filled.
enum Shared {
    Held(CheckedReader),
    Filling(FillFollower),
}

impl Shared {
    /// The image's whole size.
    fn size(&self) -> u64 {
        match self {
            Shared::Held(reader) => reader.record().size,
            Shared::Filling(follower) => follower.size(),
        }
    }

    fn remaining(&self) -> u64 {
        match self {
            Shared::Held(reader) => reader.remaining(),
            Shared::Filling(follower) => follower.remaining(),
        }
    }

    /// The answer: `200` with the whole image, or `206` from byte `from`.
    fn response(self, from: u64) -> Response<Body> {
        let (size, length) = (self.size(), self.remaining());
        let filling = matches!(self, Shared::Filling(_));
        tracing::debug!(from, filling, "serving a peer");
        let mut response = Response::new(Body::new(self));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if from > 0 {
            let range = format!("bytes {from}-{}/{size}", size - 1);
            let range = HeaderValue::from_str(&range).expect("header text");
            headers.insert(header::CONTENT_RANGE, range);
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        response
    }
}

impl http_body::Body for Shared {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let chunk = match &mut *self {
            Shared::Held(reader) => reader.poll_chunk(cx),
            Shared::Filling(follower) => follower.poll_chunk(cx),
        };
        chunk.map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining())
    }
}
