//! The answers the management routes make themselves: JSON, empty, or a [`Refusal`].

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::CacheBody;

pub(crate) use crate::error_page::{ErrorFormat, Refusal};

/// A management answer, in the body type of the service it passes through.
pub(crate) type Answer<B> = Response<CacheBody<B>>;

pub(crate) fn json<B>(status: StatusCode, value: &impl Serialize) -> Answer<B> {
    let body = serde_json::to_vec(value).expect("management answers serialize");
    let mut response = Response::new(CacheBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn empty<B>(status: StatusCode) -> Answer<B> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = status;
    response
}

/// `answer` (to `GET /v2/cache/nodes/{id}`) with `X-Image-Cache-Filling` listing the nodes
/// reading the image now (for the fleet, or into a zone), when there are any.
#[cfg(feature = "centralized-db")]
pub(crate) fn with_filling<B>(mut answer: Answer<B>, nodes: &[String]) -> Answer<B> {
    let list = nodes.join(", ");
    if let (false, Ok(value)) = (nodes.is_empty(), HeaderValue::from_str(&list)) {
        let name = header::HeaderName::from_static("x-image-cache-filling");
        answer.headers_mut().insert(name, value);
    }
    answer
}
