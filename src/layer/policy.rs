//! Which responses of the wrapped service the cache may fill from.

use http::{header, Response, StatusCode};
use http_body::Body;

use crate::image_meta::content_length;

/// Only a whole, plain, storable image is cached: `200`, not encoded, not `no-store`, not empty,
/// not a range.
pub(crate) fn is_fillable<B: Body>(response: &Response<B>) -> bool {
    let headers = response.headers();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_store = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"));
    let empty = response.body().is_end_stream() || content_length(headers) == Some(0);
    response.status() == StatusCode::OK
        && !encoded
        && !no_store
        && !empty
        && !headers.contains_key(header::CONTENT_RANGE)
}

/// The length a fill holds the body to: the message's own (hyper sends an exact size hint as
/// `Content-Length`).
pub(crate) fn message_length<B: Body>(response: &Response<B>) -> Option<u64> {
    content_length(response.headers()).or_else(|| response.body().size_hint().exact())
}
