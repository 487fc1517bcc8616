//! Which responses of the wrapped service the cache may fill from, and asking for one it may.

use std::fmt;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;

use super::transform::has_cache_directive;
use crate::image_meta::content_length;

/// Why a response is not filled into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotFillable {
    /// Not a `200`.
    Status(StatusCode),
    /// Encoded (`Content-Encoding`), although the cache asked for the identity encoding.
    Encoded(String),
    /// `Cache-Control: no-store`.
    NoStore,
    /// No bytes.
    Empty,
    /// Part of the image (`Content-Range`).
    Partial,
}

impl fmt::Display for NotFillable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFillable::Status(status) => write!(f, "the image API answered {status}, not 200"),
            NotFillable::Encoded(coding) => write!(
                f,
                "the image API sent the image with Content-Encoding {coding:?} although the cache \
                 asked for the identity encoding (is a compression layer inside the cache? put \
                 it outside, or let it honour Accept-Encoding: identity)"
            ),
            NotFillable::NoStore => f.write_str("the image API answered Cache-Control: no-store"),
            NotFillable::Empty => f.write_str("the image API sent no bytes"),
            NotFillable::Partial => f.write_str("the image API sent part of the image"),
        }
    }
}

/// Asks the wrapped service for the plain bytes: a download the cache may fill is stored as the
/// image itself, never as one client's compressed form of it.
pub(crate) fn ask_for_identity(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Only a whole, plain, storable image is cached: `200`, not encoded, not `no-store`, not empty,
/// not a range. `None` when `response` may be filled.
pub(crate) fn not_fillable<B: Body>(response: &Response<B>) -> Option<NotFillable> {
    let headers = response.headers();
    if response.status() != StatusCode::OK {
        return Some(NotFillable::Status(response.status()));
    }
    if let Some(coding) = headers
        .get(header::CONTENT_ENCODING)
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Some(NotFillable::Encoded(
            String::from_utf8_lossy(coding.as_bytes()).into_owned(),
        ));
    }
    if has_cache_directive(headers, "no-store") {
        return Some(NotFillable::NoStore);
    }
    if response.body().is_end_stream() || content_length(headers) == Some(0) {
        return Some(NotFillable::Empty);
    }
    if headers.contains_key(header::CONTENT_RANGE) {
        return Some(NotFillable::Partial);
    }
    None
}

/// The length a fill holds the body to: the message's own (hyper sends an exact size hint as
/// `Content-Length`).
pub(crate) fn message_length<B: Body>(response: &Response<B>) -> Option<u64> {
    content_length(response.headers()).or_else(|| response.body().size_hint().exact())
}
