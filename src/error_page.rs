//! Errors in the body Glance (webob) gives them: an HTML page by default, `{"message", "code",
//! "title"}` when the caller's `Accept` asks for JSON, for the management routes and for the
//! answers the download path makes itself (`504` when the upstream is too slow, `503` when the
//! node is at a limit).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::body::CacheBody;

/// How a caller wants an error: Glance (webob) answers HTML unless `Accept` asks for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorFormat {
    Html,
    Json,
}

impl ErrorFormat {
    pub(crate) fn of(headers: &http::HeaderMap) -> Self {
        let json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"));
        if json {
            ErrorFormat::Json
        } else {
            ErrorFormat::Html
        }
    }
}

/// A management request answered with an error, in the body Glance (webob) gives: an HTML page
/// by default, `{"message", "code", "title"}` when the caller accepts JSON. python-glanceclient
/// prints the page as `HTTP 404 Not Found: <message>`, as it does Glance's.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    allow: Option<&'static [Method]>,
    /// `WWW-Authenticate`, sent with a 401.
    challenge: Option<String>,
    /// `Retry-After` in seconds, sent with a 503.
    retry_after: Option<u32>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            allow: None,
            challenge: None,
            retry_after: None,
        }
    }

    /// Sends `Retry-After: seconds` (for a 503: when to try again).
    pub(crate) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Sends `challenge` as `WWW-Authenticate` if this is a 401.
    pub(crate) fn challenge(mut self, challenge: Option<String>) -> Self {
        if self.status == StatusCode::UNAUTHORIZED {
            self.challenge = challenge;
        }
        self
    }

    /// A 405 naming the methods the route does answer.
    pub(crate) fn method_not_allowed(method: &Method, allow: &'static [Method]) -> Self {
        let message = format!("The method {method} is not allowed for this resource. ");
        Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message,
            allow: Some(allow),
            challenge: None,
            retry_after: None,
        }
    }

    pub(crate) fn into_response<B>(self, format: ErrorFormat) -> Response<CacheBody<B>> {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let code = format!("{} {title}", self.status.as_u16());
        let mut response = match format {
            ErrorFormat::Json => {
                let message = format!("{}<br /><br />\n\n\n", self.message);
                let body = serde_json::json!({ "message": message, "code": code, "title": title });
                let mut response = Response::new(CacheBody::full(Bytes::from(body.to_string())));
                *response.status_mut() = self.status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            ErrorFormat::Html => {
                let page = format!(
                    "<html>\n <head>\n  <title>{code}</title>\n </head>\n <body>\n  \
                     <h1>{code}</h1>\n  {}<br /><br />\n\n\n\n </body>\n</html>",
                    escape_html(&self.message)
                );
                let mut response = Response::new(CacheBody::full(Bytes::from(page)));
                *response.status_mut() = self.status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=UTF-8"),
                );
                response
            }
        };
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
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

/// An error answered in the body Glance (webob) gives: an HTML page, or `{"message", "code",
/// "title"}` when the request's `Accept` asks for JSON, so that python-glanceclient and
/// openstackclient print it as they print Glance's own (`HTTP 503 Service Unavailable: ...`).
///
/// For a service in front of the cache that refuses a request itself (a node at its
/// connection limit, say):
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_image_cache::layer::GlanceError;
///
/// let response = GlanceError::new(StatusCode::SERVICE_UNAVAILABLE, "The node is busy. Try again.")
///     .retry_after(1)
///     .response_for::<String>(&HeaderMap::new());
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.headers()["retry-after"], "1");
/// ```
#[derive(Debug)]
pub struct GlanceError(Refusal);

impl GlanceError {
    /// An error with `status`, and `message` as its sentence (say what failed and what to do).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        GlanceError(Refusal::new(status, message))
    }

    /// Sends `Retry-After: seconds` (with a 503: when to try again).
    #[must_use]
    pub fn retry_after(self, seconds: u32) -> Self {
        GlanceError(self.0.retry_after(seconds))
    }

    /// The response, in the format the request with `headers` accepts.
    pub fn response_for<B>(self, headers: &http::HeaderMap) -> Response<CacheBody<B>> {
        self.0.into_response(ErrorFormat::of(headers))
    }
}

/// Text for an HTML page, escaped as webob escapes it.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    escaped
}
