//! A client of one node's management API (`/v2/cache`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use tower_image_cache::keystone::{Keystone, KeystoneError, TlsOptions};
use tower_image_cache::store::{Cleaned, Pruned};

use super::answers::{ClientError, Listing};
use super::https::client_builder;
use super::identity::Auth;
use crate::causes::error_chain;

/// One node's `/v2/cache` API, as a token holder or a Keystone identity.
#[derive(Debug, Clone)]
pub struct ManageClient {
    node: String,
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-d/--debug`: every request and its answer's status are written to standard error.
pub fn set_debug(on: bool) {
    DEBUG.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// How long the tools wait between two reads of an answer, by default.
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `IMAGE_CACHE_READ_TIMEOUT` (seconds), else [`DEFAULT_READ_TIMEOUT`].
fn read_timeout() -> Duration {
    std::env::var("IMAGE_CACHE_READ_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_READ_TIMEOUT, Duration::from_secs)
}

impl ManageClient {
    /// A client of `node`: `host`, `host:port` or a URL; `port` applies when none is given.
    /// Connections are given 10 s to open, and answers a limit between two
    /// reads (60 s; `IMAGE_CACHE_READ_TIMEOUT`, in seconds, sets another); there is no total limit.
    pub fn new(node: &str, port: u16, token: Option<String>) -> Self {
        let auth = token.map_or(Auth::Anonymous, Auth::Token);
        Self::with_auth(node, port, auth, &TlsOptions::default())
            .expect("an HTTP client with the system's roots builds")
    }

    /// A client of `node` calling as `auth`, checking HTTPS certificates as `tls` says.
    pub fn with_auth(node: &str, port: u16, auth: Auth, tls: &TlsOptions) -> Result<Self, String> {
        let base = if node.contains("://") {
            node.trim_end_matches('/').to_owned()
        } else if node.contains(':') && !node.contains('[') && node.matches(':').count() == 1 {
            format!("http://{node}")
        } else {
            format!("http://{node}:{port}")
        };
        let http = client_builder(tls)?
            // Between reads, never in total: a prefetch of a large image over a slow link takes
            // as long as it takes, while a node that stops sending is given up.
            .read_timeout(read_timeout())
            .build()
            .map_err(|err| format!("the HTTP client cannot be set up: {err}"))?;
        Ok(ManageClient {
            node: node.to_owned(),
            base,
            auth,
            http,
        })
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The node as the operator named it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `GET /v2/images/{id}/file` from the node's image API, as this client's identity; the
    /// response whatever its status.
    pub async fn download(&self, id: &str) -> Result<reqwest::Response, ClientError> {
        self.send(Method::GET, &format!("/v2/images/{id}/file"), None)
            .await
    }

    /// Sends a request with this client's identity (one re-login on a 401 for a Keystone one).
    async fn send(
        &self,
        method: Method,
        path: &str,
        target: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let build = |token: Option<&str>| {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("accept", "application/json");
            if let Some(token) = token {
                request = request.header("x-auth-token", token);
            }
            if let Some(target) = target {
                request = request.header("x-image-cache-clear-target", target);
            }
            request
        };
        let unreachable = |reason: String| ClientError::Unreachable {
            node: self.node.clone(),
            reason,
        };
        let debug = DEBUG.load(std::sync::atomic::Ordering::Relaxed);
        if debug {
            eprintln!("REQ: {method} {url}");
        }
        let started = std::time::Instant::now();
        let sent = match &self.auth {
            Auth::Anonymous => build(None).send().await,
            Auth::Token(token) => build(Some(token)).send().await,
            Auth::Keystone(keystone) => match send_as(keystone, |token| build(Some(token))).await {
                Ok(sent) => sent,
                Err(err) => return Err(ClientError::Identity(err.to_string())),
            },
        };
        if debug {
            match &sent {
                Ok(response) => eprintln!(
                    "RESP: {} after {:.3} s",
                    response.status(),
                    started.elapsed().as_secs_f64()
                ),
                Err(err) => eprintln!("RESP: no answer: {}", error_chain(err)),
            }
        }
        sent.map_err(|err| unreachable(error_chain(&err)))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        target: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let response = self.send(method, path, target).await?;
        self.answer(response).await
    }

    /// A response's body when it succeeded, else the refusal in Glance's tools' words.
    async fn answer(&self, response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            node: self.node.clone(),
            reason,
        };
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| unreachable(error_chain(&err)))?
            .to_vec();
        if status.is_success() {
            return Ok(body);
        }
        // Glance's (webob's) `{"message": ...}`, or OpenStack's `{"error": {"message": ...}}`.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let message = v
                    .get("message")
                    .or_else(|| v.get("error")?.get("message"))?;
                let text = message.as_str()?;
                Some(
                    text.split("<br />")
                        .next()
                        .unwrap_or(text)
                        .trim()
                        .to_owned(),
                )
            });
        Err(match (status, message) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _)
                if matches!(self.auth, Auth::Anonymous) =>
            {
                ClientError::NoToken
            }
            (StatusCode::FORBIDDEN, _) => ClientError::Forbidden,
            (StatusCode::UNAUTHORIZED, _) => ClientError::Unauthorized,
            (StatusCode::NOT_FOUND, None) => ClientError::NotEnabled {
                node: self.node.clone(),
            },
            (status, message) => ClientError::Refused {
                status,
                message: message.unwrap_or_else(|| summarize(&body)),
            },
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|err| ClientError::Unreachable {
            node: self.node.clone(),
            reason: format!("unexpected answer: {err}"),
        })
    }

    /// `GET /v2/cache?in_progress=true`: Glance's listing and this cache's fills in progress.
    pub async fn list(&self) -> Result<Listing, ClientError> {
        let body = self
            .call(Method::GET, "/v2/cache?in_progress=true", None)
            .await?;
        self.parse(&body)
    }

    /// Which node answers at this client's address: the `worker_self_reference_url` it names in
    /// its answers, or `None` (a node without one, a load balancer that strips it, a Glance).
    pub async fn answering_node(&self) -> Result<Option<String>, ClientError> {
        let response = self.send(Method::GET, "/v2/cache", None).await?;
        let node = response
            .headers()
            .get(tower_image_cache::manage::NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.answer(response).await?;
        Ok(node)
    }

    /// `GET /v2/cache/nodes/{id}`: the fleet's nodes holding the image.
    pub async fn nodes_caching(&self, id: &str) -> Result<Vec<String>, ClientError> {
        let body = self
            .call(Method::GET, &format!("/v2/cache/nodes/{id}"), None)
            .await?;
        self.parse(&body)
    }

    /// `GET /v2/cache/nodes`: every node of the fleet.
    pub async fn fleet_nodes(&self) -> Result<Vec<String>, ClientError> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: Vec<String>,
        }
        let body = self.call(Method::GET, "/v2/cache/nodes", None).await?;
        Ok(self.parse::<Nodes>(&body)?.nodes)
    }

    /// `PUT /v2/cache/{id}`.
    pub async fn queue(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::PUT, &format!("/v2/cache/{id}"), None)
            .await
            .map(drop)
    }

    /// `DELETE /v2/cached_images/{id}`: from the cache only (the queue keeps it), as Glance's
    /// `delete-cached-image`.
    pub async fn uncache(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v2/cached_images/{id}"), None)
            .await
            .map(drop)
    }

    /// `DELETE /v2/queued_images/{id}`: from the queue only (a cached copy stays), as Glance's
    /// `delete-queued-image`.
    pub async fn dequeue(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v2/queued_images/{id}"), None)
            .await
            .map(drop)
    }

    /// `DELETE /v2/cache/{id}`: from the cache and the queue.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v2/cache/{id}"), None)
            .await
            .map(drop)
    }

    /// `DELETE /v2/cache` for `cache`, `queue` or `both`.
    pub async fn clear(&self, target: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, "/v2/cache", Some(target))
            .await
            .map(drop)
    }

    /// `POST /v2/cache/prune`.
    pub async fn prune(&self) -> Result<Pruned, ClientError> {
        let body = self.call(Method::POST, "/v2/cache/prune", None).await?;
        self.parse(&body)
    }

    /// `POST /v2/cache/clean`.
    pub async fn clean(&self) -> Result<Cleaned, ClientError> {
        let body = self.call(Method::POST, "/v2/cache/clean", None).await?;
        self.parse(&body)
    }

    /// `POST /v2/cache/prefetch`.
    pub async fn prefetch(&self) -> Result<(), ClientError> {
        self.call(Method::POST, "/v2/cache/prefetch", None)
            .await
            .map(drop)
    }
}

/// A body that is not the management API's JSON, in a few words: an HTML page's title, or the
/// first line of text, never the whole page.
fn summarize(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "the answer had no body".into();
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with('<') {
        let title = lower
            .find("<title>")
            .map(|at| at + "<title>".len())
            .and_then(|at| Some((at, at + lower[at..].find("</title>")?)))
            .map(|(from, to)| text[from..to].trim().to_owned());
        return match title.filter(|t| !t.is_empty()) {
            Some(title) => format!("an HTML page titled {title:?} (not a cache management answer)"),
            None => "an HTML page (not a cache management answer)".into(),
        };
    }
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > MAX {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        line.to_owned()
    }
}

/// Sends the request `build` makes with `keystone`'s token; on a 401, logs in again and sends it
/// once more (when the credential is renewable). The outer error: no token could be had.
async fn send_as(
    keystone: &Keystone,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Result<reqwest::Response, reqwest::Error>, KeystoneError> {
    let token = keystone.token().await?;
    let response = match build(token.id.expose()).send().await {
        Ok(response) => response,
        Err(err) => return Ok(Err(err)),
    };
    if response.status() != StatusCode::UNAUTHORIZED || !keystone.renewable() {
        return Ok(Ok(response));
    }
    tracing::info!(
        url = %response.url(),
        "the node refused the Keystone token (401); logging in again and retrying once"
    );
    keystone.forget(&token).await;
    let token = keystone.token().await?;
    Ok(build(token.id.expose()).send().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_json_are_summarized() {
        let page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1>\n<p>nginx</p></body></html>";
        assert_eq!(
            summarize(page),
            "an HTML page titled \"502 Bad Gateway\" (not a cache management answer)"
        );
        assert_eq!(
            summarize(b"<!DOCTYPE html><p>x</p>"),
            "an HTML page (not a cache management answer)"
        );
        assert_eq!(summarize(b"upstream timed out\nmore"), "upstream timed out");
        assert_eq!(summarize(b"  "), "the answer had no body");
        let long = "x".repeat(500);
        assert_eq!(summarize(long.as_bytes()).len(), 123);
    }
}
