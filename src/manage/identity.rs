//! The cache's own identity towards the image API: the headers its prefetcher and existence
//! checks send, fixed or from Keystone (renewed, and replaced once after a 401).

use http::{HeaderMap, Request, Response, StatusCode};
#[cfg(feature = "keystone")]
use http::{HeaderName, HeaderValue};
use tower::{Service, ServiceExt};

#[cfg(feature = "keystone")]
use crate::keystone::{Keystone, KeystoneError};

/// Why the cache's own identity has no credential to send now.
#[derive(Debug)]
pub(crate) enum IdentityError {
    /// Keystone gave no token (unreachable, or the credential refused).
    #[cfg(feature = "keystone")]
    NoToken(KeystoneError),
    /// Keystone's token cannot be sent in a header.
    #[cfg(feature = "keystone")]
    TokenNotAHeader,
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "keystone")]
            IdentityError::NoToken(err) => {
                write!(f, "the cache's service identity has no token: {err}")
            }
            #[cfg(feature = "keystone")]
            IdentityError::TokenNotAHeader => {
                f.write_str("Keystone issued a token that is not a header value")
            }
            #[cfg(not(feature = "keystone"))]
            _ => {
                let _ = f;
                match *self {}
            }
        }
    }
}

/// Who the cache is when it asks the image API itself.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// Fixed headers (a static token, or none).
    Headers(HeaderMap),
    /// A Keystone identity's current token in `X-Auth-Token`.
    #[cfg(feature = "keystone")]
    Keystone(Keystone),
}

#[cfg(feature = "keystone")]
const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

impl Identity {
    /// The headers to send now; an error names why no token could be had.
    pub(crate) async fn headers(&self) -> Result<HeaderMap, IdentityError> {
        match self {
            Identity::Headers(headers) => Ok(headers.clone()),
            #[cfg(feature = "keystone")]
            Identity::Keystone(keystone) => {
                let token = keystone.token().await.map_err(IdentityError::NoToken)?;
                let mut value = HeaderValue::from_str(token.id.expose())
                    .map_err(|_| IdentityError::TokenNotAHeader)?;
                value.set_sensitive(true);
                Ok(HeaderMap::from_iter([(X_AUTH_TOKEN, value)]))
            }
        }
    }

    /// After a 401 to `sent`: drops the refused token, and says whether trying again with new
    /// headers may succeed.
    async fn refused(&self, sent: &HeaderMap) -> bool {
        match self {
            Identity::Headers(_) => {
                let _ = sent;
                false
            }
            #[cfg(feature = "keystone")]
            Identity::Keystone(keystone) => {
                if !keystone.renewable() {
                    return false;
                }
                if let Ok(current) = keystone.token().await {
                    if sent.get(X_AUTH_TOKEN).map(HeaderValue::as_bytes)
                        == Some(current.id.expose().as_bytes())
                    {
                        tracing::info!(
                            "the image API refused the service token (401); logging in again"
                        );
                        keystone.forget(&current).await;
                    }
                }
                true
            }
        }
    }

    /// Sends `build()`'s request with this identity's headers through `service`; after a 401,
    /// once more with new ones. `Ok(Err(reason))` when no token could be had.
    pub(crate) async fn send<S, B, R>(
        &self,
        service: S,
        build: impl Fn() -> Request<B>,
    ) -> Result<Result<Response<R>, IdentityError>, S::Error>
    where
        S: Service<Request<B>, Response = Response<R>> + Clone,
    {
        let mut retried = false;
        loop {
            let headers = match self.headers().await {
                Ok(headers) => headers,
                Err(reason) => return Ok(Err(reason)),
            };
            let mut request = build();
            request.headers_mut().extend(headers.clone());
            let response = service.clone().oneshot(request).await?;
            if response.status() != StatusCode::UNAUTHORIZED
                || retried
                || !self.refused(&headers).await
            {
                return Ok(Ok(response));
            }
            retried = true;
        }
    }
}
