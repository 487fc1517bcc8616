//! The node's own answers when its upstream fails: Glance's JSON error shape, saying what
//! failed in words that name no internal address (the log has the address and the cause).

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

/// What kind of failure `cause` (an error chain) is, in words that name no address.
pub(crate) fn cause_in_words(cause: &str) -> &'static str {
    let cause = cause.to_ascii_lowercase();
    if cause.contains("certificate") {
        " (its TLS certificate was not accepted)"
    } else if cause.contains("refused") {
        " (the connection was refused)"
    } else if cause.contains("dns") || cause.contains("lookup") || cause.contains("resolve") {
        " (its name does not resolve)"
    } else if cause.contains("reset") || cause.contains("closed") || cause.contains("incomplete") {
        " (the connection was cut)"
    } else {
        ""
    }
}

pub(crate) fn bad_gateway(reason: &str) -> Response<Body> {
    gateway_error(StatusCode::BAD_GATEWAY, reason)
}

pub(crate) fn gateway_error(status: StatusCode, reason: &str) -> Response<Body> {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::json!({ "error": { "code": status.as_u16(), "title": title, "message": reason } });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
