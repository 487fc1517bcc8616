//! The image API the server caches: requests forwarded over pooled connections.

use std::convert::Infallible;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Forwards requests to the upstream image API over a pooled connection.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    /// The image API at `base` (`http://glance:9292`).
    pub fn new(base: Uri) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Upstream { base, client }
    }

    /// Sends `request` on to the upstream; a failure to reach it is a `502` saying so.
    pub async fn forward(self, mut request: Request<Body>) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{}", self.base.to_string().trim_end_matches('/'), path);
        *request.uri_mut() = match uri.parse() {
            Ok(uri) => uri,
            Err(err) => return Ok(bad_gateway(&format!("cannot forward to {uri}: {err}"))),
        };
        strip_hop_by_hop(request.headers_mut());
        if let Some(authority) = self
            .base
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, authority);
        }
        match self.client.request(request).await {
            Ok(response) => {
                let mut response = response.map(Body::new);
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Err(err) => Ok(bad_gateway(&format!(
                "the upstream image API at {} is unreachable: {err}",
                self.base
            ))),
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .map(|h| h.as_str().to_owned())
        .chain(named)
        .chain(["keep-alive".to_owned()])
    {
        headers.remove(name.as_str());
    }
}

fn bad_gateway(reason: &str) -> Response<Body> {
    let body =
        serde_json::json!({ "error": { "code": 502, "title": "Bad Gateway", "message": reason } });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
