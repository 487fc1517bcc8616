//! The image API the server caches: requests forwarded over pooled connections, as a
//! well-behaved reverse proxy for OpenStack (forwarding headers, its own URLs in `Location` and
//! the versions document, one retry of an idempotent request on a dead pooled connection).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::forwarded::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::gateway_errors::{bad_gateway, cause_in_words, gateway_error};
use super::options::UpstreamTimeouts;
use super::upstream_body::{Announced, IdleLimited};
use tower_image_cache::keystone::TlsOptions;

use crate::causes::error_chain;
use tower_image_cache::store::{UpstreamFailure, UpstreamPhase};
use tower_image_cache::ImageCache;

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The versions document is rewritten to name the proxy when it is at most this long.
const MAX_VERSIONS_DOCUMENT: usize = 64 * 1024;

/// Forwards requests to the upstream image API over a pooled connection.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: Uri,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// For requests that cannot be sent again (with a body): a new connection each, so none is
    /// lost to a pooled connection the upstream has closed.
    fresh: Client<HttpsConnector<HttpConnector>, Body>,
    timeouts: UpstreamTimeouts,
    /// Where timeouts are counted.
    cache: Option<ImageCache>,
}

impl Upstream {
    /// The image API at `base` (`http://glance:9292`, or `https://` with certificates checked as
    /// `tls` says). Without `keepalive`, each request gets a connection of its own (for
    /// upstreams that close connections without saying so). An error names the CA file at fault.
    pub fn new(
        base: Uri,
        keepalive: bool,
        tls: &TlsOptions,
        timeouts: UpstreamTimeouts,
    ) -> Result<Self, String> {
        let connector = super::upstream_tls::connector(tls, timeouts.connect)?;
        let mut builder = Client::builder(TokioExecutor::new());
        if !keepalive {
            builder.pool_max_idle_per_host(0);
        }
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector.clone());
        Ok(Upstream {
            base,
            client: builder.build(connector),
            fresh,
            timeouts,
            cache: None,
        })
    }

    /// Counts timeouts into `cache`'s metrics (`image_cache_upstream_timeouts_total`).
    pub fn count_into(mut self, cache: &ImageCache) -> Self {
        self.cache = Some(cache.clone());
        self
    }

    /// Logs and counts a timeout in `phase`; the `504` the caller gets.
    fn timed_out(
        &self,
        method: &Method,
        path: &str,
        phase: UpstreamPhase,
        limit: Duration,
    ) -> Response<Body> {
        if let Some(cache) = &self.cache {
            cache.count_upstream_failure(UpstreamFailure::Timeout(phase));
        }
        let phase = phase.as_str();
        tracing::warn!(
            upstream = %self.base,
            phase,
            limit_seconds = limit.as_secs_f64(),
            %method,
            path,
            "the upstream image API timed out; answering 504"
        );
        let what = match phase {
            "connect" => "could not be connected to",
            _ => "did not answer",
        };
        gateway_error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "The upstream image API {what} within {} s (upstream_{phase}_timeout). Try again later.",
                limit.as_secs_f64()
            ),
        )
    }

    fn base_text(&self) -> String {
        self.base.to_string().trim_end_matches('/').to_owned()
    }

    /// Sends `request` on to the upstream; a failure to reach it is a `502` saying why, and one
    /// that takes too long a `504`.
    pub async fn forward(self, request: Request<Body>) -> Result<Response<Body>, Infallible> {
        let (mut parts, body) = request.into_parts();
        if parts.uri == "*" {
            // `OPTIONS *` asks this server what it can do; it is not the upstream's to answer,
            // and never goes anywhere with the caller's token.
            return Ok(server_options());
        }
        let front = front_base(&parts);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{path}", self.base_text());
        parts.uri = match uri.parse() {
            Ok(uri) => uri,
            Err(err) => return Ok(bad_gateway(&format!("cannot forward to {uri}: {err}"))),
        };
        // The upstream client speaks HTTP/1.1, whatever the caller spoke.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        forwarding_headers(&mut parts.headers, &self.base);
        // A request without a body to send again may be sent again.
        let replayable = idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
        let client = if replayable {
            &self.client
        } else {
            &self.fresh
        };
        // The response timeout runs from the moment the request's body is sent: an upload
        // may take far longer than the upstream's answer to it.
        let (body, sent) = Announced::new(body);
        let first = self
            .answered(
                client.request(Request::from_parts(parts.clone(), Body::new(body))),
                sent,
            )
            .await;
        let answer = match first {
            Some(Err(err)) if replayable && stale_connection(&err) => {
                tracing::debug!(
                    cause = %error_chain(&err),
                    "the upstream closed a pooled connection; sending the request again"
                );
                let (body, sent) = Announced::new(Body::empty());
                self.answered(
                    self.client
                        .request(Request::from_parts(parts.clone(), Body::new(body))),
                    sent,
                )
                .await
            }
            other => other,
        };
        let path = parts.uri.path().to_owned();
        match answer {
            None => {
                let limit = self.timeouts.response.unwrap_or_default();
                Ok(self.timed_out(&parts.method, &path, UpstreamPhase::Response, limit))
            }
            Some(Ok(response)) => {
                if let (Some(cache), true) = (&self.cache, response.status().is_server_error()) {
                    cache.count_upstream_failure(UpstreamFailure::ServerError);
                }
                let idle = self.timeouts.idle;
                let cache = self.cache.clone();
                let upstream = self.base.to_string();
                let mut response = response.map(|body| match idle {
                    Some(limit) => Body::new(IdleLimited::new(body, limit, upstream, cache)),
                    None => Body::new(body),
                });
                strip_hop_by_hop(response.headers_mut());
                Ok(self.name_the_proxy(&parts, response, front).await)
            }
            Some(Err(err)) if err.is_connect() && timed_out(&err) => {
                let limit = self.timeouts.connect.unwrap_or_default();
                Ok(self.timed_out(&parts.method, &path, UpstreamPhase::Connect, limit))
            }
            Some(Err(err)) => {
                let (kind, failure) = if err.is_connect() {
                    ("connect", UpstreamFailure::Connect)
                } else {
                    ("connection", UpstreamFailure::Connection)
                };
                if let Some(cache) = &self.cache {
                    cache.count_upstream_failure(failure);
                }
                let cause = error_chain(&err);
                tracing::warn!(upstream = %self.base, %cause, kind, method = %parts.method, path, "the upstream image API could not be reached; answering 502");
                // The caller is told what failed, not where the node's upstream is.
                Ok(bad_gateway(&format!(
                    "The image API behind this node could not be reached{}. Try again later.",
                    cause_in_words(&cause)
                )))
            }
        }
    }

    /// The upstream's answer to a request whose body is announced sent by `sent`; `None` when
    /// no response head came within the response timeout of that moment.
    async fn answered<F, T>(
        &self,
        request: F,
        sent: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        let Some(limit) = self.timeouts.response else {
            return Some(request.await);
        };
        let deadline = async move {
            // A body that failed never announces itself: the request fails on its own.
            if sent.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(limit).await;
        };
        tokio::select! {
            answer = request => Some(answer),
            () = deadline => None,
        }
    }

    /// Where the upstream names itself (`Location`, the versions document's links), names the
    /// proxy instead, so clients that follow those URLs stay with the cache.
    async fn name_the_proxy(
        &self,
        request: &request::Parts,
        mut response: Response<Body>,
        front: Option<String>,
    ) -> Response<Body> {
        let Some(front) = front else {
            return response;
        };
        let upstream = self.base_text();
        if let Some(location) = response.headers().get(header::LOCATION) {
            if let Some(rest) = location
                .to_str()
                .ok()
                .and_then(|l| l.strip_prefix(&upstream))
            {
                if let Ok(value) = HeaderValue::from_str(&format!("{front}{rest}")) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
            }
        }
        let versions = matches!(request.uri.path(), "/" | "/versions");
        let small = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|len| len <= MAX_VERSIONS_DOCUMENT);
        if !versions || !small || request.method != Method::GET {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let Ok(collected) = body.collect().await else {
            return bad_gateway("the upstream's versions document could not be read");
        };
        let text = String::from_utf8_lossy(&collected.to_bytes()).replace(&upstream, &front);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, text.len().into());
        Response::from_parts(parts, Body::from(text))
    }
}

/// The proxy's own base URL as the client called it: the scheme and host the node's edge
/// recorded (`X-Forwarded-Proto`, `-Host`: the connection's own, or a trusted proxy's), else
/// `http://` and the `Host`.
fn front_base(request: &request::Parts) -> Option<String> {
    let headers = &request.headers;
    let text = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(&X_FORWARDED_HOST).or_else(|| text(&header::HOST))?;
    let scheme = text(&X_FORWARDED_PROTO).unwrap_or("http");
    Some(format!("{scheme}://{host}"))
}

/// Tells the upstream where the request came in (`X-Forwarded-Host`, `X-Forwarded-Proto`), which
/// oslo.middleware's `http_proxy_to_wsgi` reads in Glance's pipeline, and addresses it by its
/// own name. A request from a client was given its forwarding headers at the node's edge
/// (`forwarded.rs`); one of the node's own (the prefetcher's) names its `Host`.
fn forwarding_headers(headers: &mut HeaderMap, upstream: &Uri) {
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
    }
    if let Some(authority) = upstream
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, authority);
    }
}

fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// A pooled connection the upstream had closed: nothing of an answer came back, and sending
/// again on a new connection is safe for an idempotent request.
fn stale_connection(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
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

/// A connection attempt that ran out of `upstream_connect_timeout`.
fn timed_out(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// `OPTIONS *`: what the node answers, without asking the upstream.
fn server_options() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}
