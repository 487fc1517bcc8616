//! [`Keystone`]: a logged-in identity that keeps its token fresh, and checks other tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use super::error::KeystoneError;
use super::options::{AuthOptions, Credential, Interface};
use super::secret::Secret;
use super::token::Token;
use super::wire::{body, error_chain, login_body, message, send, unexpected, unreachable, v3_url};

/// A Keystone v3 identity. Cheap to clone; clones share one token.
///
/// The first call that needs a token logs in; the token is kept and replaced when less than a
/// quarter of its life (at most five minutes) is left, by logging in again with the password or
/// application credential (re-authenticating with a token would keep the old expiry). A
/// [`Credential::Token`] is used as given and cannot be renewed.
#[derive(Clone)]
pub struct Keystone {
    shared: Arc<Shared>,
}

struct Shared {
    options: AuthOptions,
    /// `auth_url`, ending in `/v3`.
    base: String,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<Arc<Token>>>,
}

/// Why [`Keystone::send`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// No token could be had.
    Identity(KeystoneError),
    /// The request itself failed (the service could not be reached, or its answer was cut).
    Request(RequestError),
}

/// A request [`Keystone::send`] sent that failed on the way: what failed, as a sentence naming
/// the service's URL.
#[derive(Debug)]
pub struct RequestError(reqwest::Error);

impl RequestError {
    /// The HTTP client's own error, for the crate's tools.
    pub(crate) fn into_inner(self) -> reqwest::Error {
        self.0
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.0.url().map(|u| u.as_str()).unwrap_or("the service");
        write!(f, "{url} cannot be reached: {}", error_chain(&self.0))
    }
}

impl std::error::Error for RequestError {}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Identity(err) => err.fmt(f),
            SendError::Request(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SendError {}

/// What Keystone said of a caller's token ([`Keystone::validate`]).
#[derive(Debug, Clone)]
pub enum Validation {
    /// The token is valid; what Keystone knows of it.
    Valid(Box<Token>),
    /// Keystone does not accept the token: unknown, expired or revoked (its 404).
    Invalid,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone")
            .field("auth_url", &self.shared.base)
            .field("who", &self.shared.options.who())
            .finish_non_exhaustive()
    }
}

impl Keystone {
    /// An identity; nothing is sent until a token is needed.
    pub fn new(options: AuthOptions) -> Result<Self, KeystoneError> {
        let http = options
            .tls
            .client_builder()?
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|err| KeystoneError::Tls {
                reason: format!("the HTTPS client cannot be set up: {err}"),
            })?;
        Ok(Keystone {
            shared: Arc::new(Shared {
                base: v3_url(&options.auth_url),
                options,
                http,
                current: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The options this identity was made from.
    pub fn options(&self) -> &AuthOptions {
        &self.shared.options
    }

    /// Whether a refused token can be replaced by logging in again.
    pub fn renewable(&self) -> bool {
        !matches!(self.shared.options.credential, Credential::Token(_))
    }

    /// A token good for a while yet: the kept one, or a new one after logging in.
    pub async fn token(&self) -> Result<Arc<Token>, KeystoneError> {
        let mut current = self.shared.current.lock().await;
        if let Some(token) = current.as_ref() {
            if !self.renewable() || !token.needs_renewal(SystemTime::now()) {
                return Ok(token.clone());
            }
            tracing::info!(
                who = %self.shared.options.who(),
                "the Keystone token is close to expiry; logging in again"
            );
        }
        let token = Arc::new(self.log_in().await?);
        *current = Some(token.clone());
        Ok(token)
    }

    /// Drops `stale` (a token a service refused) so the next [`Keystone::token`] logs in again;
    /// a newer token already in place stays.
    pub async fn forget(&self, stale: &Token) {
        let mut current = self.shared.current.lock().await;
        if current.as_ref().is_some_and(|token| token.id == stale.id) {
            *current = None;
        }
    }

    /// Sends `request` with this identity's token in `X-Auth-Token` (through the TLS settings
    /// of its options) and reads the whole answer; on a 401, logs in again and sends it once
    /// more (when the credential is renewable).
    pub async fn send(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, SendError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let answer = self
            .send_with(|token| {
                let mut headers = parts.headers.clone();
                if let Ok(mut value) = http::HeaderValue::from_str(token) {
                    value.set_sensitive(true);
                    headers.insert("x-auth-token", value);
                }
                self.shared
                    .http
                    .request(parts.method.clone(), &url)
                    .headers(headers)
                    .body(body.clone())
            })
            .await?;
        let mut response = http::Response::new(bytes::Bytes::new());
        *response.status_mut() = answer.status();
        *response.version_mut() = answer.version();
        *response.headers_mut() = answer.headers().clone();
        *response.body_mut() = answer
            .bytes()
            .await
            .map_err(|err| SendError::Request(RequestError(err)))?;
        Ok(response)
    }

    /// Sends the request `build` makes with a token; on a 401, logs in again and sends it once
    /// more (when the credential is renewable).
    pub(crate) async fn send_with(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let token = self.token().await.map_err(SendError::Identity)?;
        let response = build(token.id.expose())
            .send()
            .await
            .map_err(|err| SendError::Request(RequestError(err)))?;
        if response.status() != StatusCode::UNAUTHORIZED || !self.renewable() {
            return Ok(response);
        }
        tracing::info!(
            url = %response.url(),
            "a service refused the Keystone token (401); logging in again and retrying once"
        );
        self.forget(&token).await;
        let token = self.token().await.map_err(SendError::Identity)?;
        build(token.id.expose())
            .send()
            .await
            .map_err(|err| SendError::Request(RequestError(err)))
    }

    /// The URL of the catalog's `service_type` endpoint for `interface` (and `region`, when
    /// given), from this identity's token.
    pub async fn endpoint(
        &self,
        service_type: &str,
        interface: Interface,
        region: Option<&str>,
    ) -> Result<String, KeystoneError> {
        let token = self.token().await?;
        let of_type: Vec<_> = token
            .catalog
            .iter()
            .filter(|e| e.service_type == service_type)
            .collect();
        of_type
            .iter()
            .find(|e| {
                e.interface == interface.as_str()
                    && region.is_none_or(|r| e.region.as_deref() == Some(r))
            })
            .map(|e| e.url.trim_end_matches('/').to_owned())
            .ok_or_else(|| KeystoneError::NoEndpoint {
                service_type: service_type.to_owned(),
                interface: interface.as_str(),
                region: region.map(str::to_owned),
                offered: of_type
                    .iter()
                    .map(|e| match &e.region {
                        Some(region) => format!("{} {} in {region}", e.interface, e.url),
                        None => format!("{} {}", e.interface, e.url),
                    })
                    .collect(),
            })
    }

    /// Asks Keystone about a caller's token (`GET /v3/auth/tokens` with `X-Subject-Token`),
    /// authenticated as this identity.
    pub async fn validate(&self, subject: &str) -> Result<Validation, KeystoneError> {
        let url = format!("{}/auth/tokens?nocatalog", self.shared.base);
        let response = self
            .send_with(|token| {
                self.shared
                    .http
                    .get(&url)
                    .header("x-auth-token", token)
                    .header("x-subject-token", subject)
            })
            .await
            .map_err(|err| match err {
                SendError::Identity(err) => err,
                SendError::Request(err) => unreachable(&err.into_inner()),
            })?;
        let status = response.status();
        let body = body(response, &url).await?;
        match status {
            StatusCode::OK => Token::parse(subject.into(), &body)
                .map(|token| Validation::Valid(Box::new(token)))
                .map_err(|reason| unexpected(&url, status, reason)),
            StatusCode::NOT_FOUND => Ok(Validation::Invalid),
            StatusCode::UNAUTHORIZED => Err(KeystoneError::LoginRefused {
                who: self.shared.options.who(),
                auth_url: self.shared.base.clone(),
                message: "its own token was refused when checking a caller's.".into(),
            }),
            status => Err(KeystoneError::Answer {
                url,
                status,
                message: message(&body),
            }),
        }
    }

    async fn log_in(&self) -> Result<Token, KeystoneError> {
        let options = &self.shared.options;
        if let Credential::Token(given) = &options.credential {
            return match self.describe_given(given).await? {
                Validation::Valid(token) => Ok(*token),
                Validation::Invalid => Err(KeystoneError::LoginRefused {
                    who: options.who(),
                    auth_url: self.shared.base.clone(),
                    message: "the token is unknown, expired or revoked.".into(),
                }),
            };
        }
        let url = format!("{}/auth/tokens", self.shared.base);
        let response = send(self.shared.http.post(&url).json(&login_body(options))).await?;
        let status = response.status();
        let subject = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new);
        let body = body(response, &url).await?;
        match (status, subject) {
            (StatusCode::CREATED, Some(subject)) => {
                let token = Token::parse(subject, &body)
                    .map_err(|reason| unexpected(&url, status, reason))?;
                tracing::debug!(
                    who = %options.who(),
                    project = token.project_name.as_deref().unwrap_or("-"),
                    expires_in_s = token
                        .expires_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs(),
                    "logged in to Keystone"
                );
                Ok(token)
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND, _) => {
                Err(KeystoneError::LoginRefused {
                    who: options.who(),
                    auth_url: self.shared.base.clone(),
                    message: format!("{} ({status}).", message(&body).trim_end_matches('.')),
                })
            }
            (status, _) => Err(KeystoneError::Answer {
                url,
                status,
                message: message(&body),
            }),
        }
    }

    /// A given token describes itself (`X-Auth-Token` and `X-Subject-Token` the same).
    async fn describe_given(&self, given: &Secret) -> Result<Validation, KeystoneError> {
        let url = format!("{}/auth/tokens", self.shared.base);
        let response = send(
            self.shared
                .http
                .get(&url)
                .header("x-auth-token", given.expose())
                .header("x-subject-token", given.expose()),
        )
        .await?;
        let status = response.status();
        let body = body(response, &url).await?;
        match status {
            StatusCode::OK => Token::parse(given.clone(), &body)
                .map(|t| Validation::Valid(Box::new(t)))
                .map_err(|reason| unexpected(&url, status, reason)),
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED => Ok(Validation::Invalid),
            status => Err(KeystoneError::Answer {
                url,
                status,
                message: message(&body),
            }),
        }
    }
}
