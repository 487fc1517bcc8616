//! `Cache-Control: no-transform` on the image data the layer answers.
//!
//! The `Content-Length`, `Content-MD5` and strong `ETag` of an image answer name its exact bytes;
//! an intermediary that compressed the body on the way out would leave them describing bytes
//! that are no longer sent. RFC 9110 gives the origin one way to say "send these bytes as they
//! are": the `no-transform` directive. The layer adds it to every plain image answer it sends,
//! and [`forbids_transform`] lets a compression layer's predicate honour it.

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

const NO_TRANSFORM: &str = "no-transform";

/// Whether a response's `Cache-Control` forbids transforming its body (`no-transform`).
///
/// tower-http's `CompressionLayer` does not look at `Cache-Control` by itself; give it a
/// predicate that does, and it leaves image answers as the cache sent them:
///
/// ```
/// use http::{Extensions, HeaderMap, StatusCode, Version};
/// use tower_http::compression::predicate::Predicate;
/// use tower_http::compression::{CompressionLayer, DefaultPredicate};
/// use tower_image_cache::layer::forbids_transform;
///
/// let honours_no_transform =
///     |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| !forbids_transform(headers);
/// let compression =
///     CompressionLayer::new().compress_when(DefaultPredicate::new().and(honours_no_transform));
/// # let _ = compression;
/// ```
pub fn forbids_transform(headers: &HeaderMap) -> bool {
    has_cache_directive(headers, NO_TRANSFORM)
}

/// Whether `Cache-Control` (any of its fields) holds `directive` (case-insensitive, without
/// arguments: `no-store`, `no-transform`).
pub(crate) fn has_cache_directive(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|given| given.trim().eq_ignore_ascii_case(directive))
}

/// Adds `no-transform` to a plain (not content-coded) successful answer, keeping whatever
/// `Cache-Control` directives the image API sent.
pub(crate) fn forbid_transform<B>(response: &mut Response<B>) {
    let plain = !response.headers().contains_key(header::CONTENT_ENCODING);
    if !response.status().is_success() || !plain || forbids_transform(response.headers()) {
        return;
    }
    response.headers_mut().append(
        header::CACHE_CONTROL,
        HeaderValue::from_static(NO_TRANSFORM),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn answer(status: StatusCode, headers: &[(&str, &str)]) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = status;
        for (name, value) in headers {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    fn cache_control(response: &Response<()>) -> Vec<&str> {
        response
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn plain_answers_are_marked_once_and_keep_the_apis_directives() {
        let mut response = answer(StatusCode::OK, &[("cache-control", "private, max-age=60")]);
        forbid_transform(&mut response);
        forbid_transform(&mut response);
        assert_eq!(
            cache_control(&response),
            ["private, max-age=60", "no-transform"]
        );
        assert!(forbids_transform(response.headers()));

        let mut partial = answer(StatusCode::PARTIAL_CONTENT, &[]);
        forbid_transform(&mut partial);
        assert_eq!(cache_control(&partial), ["no-transform"]);
    }

    #[test]
    fn encoded_and_failed_answers_are_left_as_they_are() {
        let mut encoded = answer(StatusCode::OK, &[("content-encoding", "gzip")]);
        forbid_transform(&mut encoded);
        assert!(cache_control(&encoded).is_empty());

        let mut missing = answer(StatusCode::NOT_FOUND, &[]);
        forbid_transform(&mut missing);
        assert!(cache_control(&missing).is_empty());
    }

    #[test]
    fn the_directive_is_found_among_others_in_any_case() {
        let response = answer(
            StatusCode::OK,
            &[("cache-control", "max-age=5 , No-Transform")],
        );
        assert!(forbids_transform(response.headers()));
        let response = answer(StatusCode::OK, &[("cache-control", "no-store")]);
        assert!(!forbids_transform(response.headers()));
    }
}
