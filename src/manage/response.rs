//! The answers the management routes make themselves: JSON, empty, or a [`Refusal`].

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde::Serialize;

use crate::body::CacheBody;

/// A management answer, in the body type of the service it passes through.
pub(crate) type Answer<B> = Response<CacheBody<B>>;

/// A management request answered with an error: a short JSON body in OpenStack's shape,
/// `{"error": {"code", "title", "message"}}`, which python-glanceclient reads.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    allow: Option<&'static [Method]>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            allow: None,
        }
    }

    /// A 405 naming the methods the route does answer.
    pub(crate) fn method_not_allowed(method: &Method, allow: &'static [Method]) -> Self {
        let message = format!("{method} is not allowed here");
        Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message,
            allow: Some(allow),
        }
    }

    pub(crate) fn into_response<B>(self) -> Answer<B> {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = serde_json::json!({ "error": { "code": self.status.as_u16(), "title": title, "message": self.message } });
        let mut response = json(self.status, &body);
        if let Some(allow) = self.allow {
            let allow = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let allow = HeaderValue::from_str(&allow).expect("method names are valid header text");
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

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
