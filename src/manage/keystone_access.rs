//! [`KeystoneAccess`]: management authorized by Keystone, as keystonemiddleware and Glance's
//! policy do it: the caller's token is checked with Keystone and must carry an admin role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::request;
use sha2::{Digest, Sha256};

use super::access::{Decide, Decision, ManageAccess};
use crate::keystone::{Keystone, Token, Validation};

/// How many checked tokens are remembered at most.
const REMEMBERED: usize = 10_000;

/// Allows callers whose `X-Auth-Token` Keystone accepts and whose roles include one of the
/// configured roles (`admin` by default).
///
/// The token is checked with `GET /v3/auth/tokens` (`X-Subject-Token`), authenticated as the
/// service identity given. A check is remembered for a short time (30 s by default), never
/// past the token's expiry. An unknown, expired or revoked token is refused with 401; a token
/// without a role with 403 in Glance's words (the roles it has and lacks are logged at `info`);
/// when Keystone cannot be asked, 503 — never an admit.
#[derive(Clone)]
pub struct KeystoneAccess {
    keystone: Keystone,
    roles: Arc<[String]>,
    remember: Duration,
    checked: Arc<Mutex<HashMap<[u8; 32], Checked>>>,
}

#[derive(Clone)]
struct Checked {
    token: Arc<Token>,
    until: Instant,
}

impl std::fmt::Debug for KeystoneAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneAccess")
            .field("keystone", &self.keystone)
            .field("roles", &self.roles)
            .field("remember", &self.remember)
            .finish_non_exhaustive()
    }
}

impl KeystoneAccess {
    /// Checks callers' tokens as `service` (an identity allowed to validate tokens: Keystone's
    /// policy lets a service or admin role do so), admitting the `admin` role.
    pub fn new(service: Keystone) -> Self {
        KeystoneAccess {
            keystone: service,
            roles: Arc::from(vec!["admin".to_owned()]),
            remember: Duration::from_secs(30),
            checked: Arc::default(),
        }
    }

    /// Admits callers with any of `roles` instead.
    #[must_use]
    pub fn roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Remembers a check for `remember` (0: ask Keystone every time).
    #[must_use]
    pub fn remember(mut self, remember: Duration) -> Self {
        self.remember = remember;
        self
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Arc<Token>> {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        match checked.get(key) {
            Some(hit) if hit.until > Instant::now() => Some(hit.token.clone()),
            Some(_) => {
                checked.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember_check(&self, key: [u8; 32], token: Arc<Token>) {
        let left = token
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let until = Instant::now() + self.remember.min(left);
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.len() >= REMEMBERED {
            let now = Instant::now();
            checked.retain(|_, hit| hit.until > now);
            if checked.len() >= REMEMBERED {
                checked.clear();
            }
        }
        checked.insert(key, Checked { token, until });
    }

    fn judge(&self, token: &Token) -> Decision {
        if token.expires_at <= SystemTime::now() {
            return Decision::Unauthenticated("the token has expired; get a new one".into());
        }
        if self.roles.iter().any(|role| token.has_role(role)) {
            return Decision::Allow;
        }
        // Glance's words for the caller ("You are not authorized to complete cache_list
        // action."); the roles it lacked go to the log.
        tracing::info!(
            user = %token.user_name,
            has = %token.roles.join(","),
            needs = %self.roles.join(","),
            "a management request was refused: the token has none of the roles needed"
        );
        Decision::Forbidden
    }
}

impl ManageAccess for KeystoneAccess {
    /// keystonemiddleware's challenge, as Glance sends it: `Keystone uri="<auth_url>"`.
    fn challenge(&self) -> Option<String> {
        Some(format!(
            "Keystone uri=\"{}\"",
            self.keystone.options().auth_url
        ))
    }

    fn decide(&self, request: &request::Parts) -> Decide {
        let mut given = request.headers.get_all("x-auth-token").iter();
        let subject = match (given.next(), given.next()) {
            (Some(value), None) => value.to_str().ok().map(str::to_owned),
            _ => None,
        };
        let access = self.clone();
        Box::pin(async move {
            let Some(subject) = subject.filter(|s| !s.is_empty()) else {
                return Decision::Unauthenticated(
                    "no token was given: send one Keystone token in X-Auth-Token".into(),
                );
            };
            let key: [u8; 32] = Sha256::digest(subject.as_bytes()).into();
            if let Some(token) = access.remembered(&key) {
                return access.judge(&token);
            }
            match access.keystone.validate(&subject).await {
                Ok(Validation::Valid(token)) => {
                    let token = Arc::new(*token);
                    access.remember_check(key, token.clone());
                    access.judge(&token)
                }
                Ok(Validation::Invalid) => Decision::Unauthenticated(
                    "the token is unknown, expired or revoked (Keystone does not accept it); get \
                     a new one"
                        .into(),
                ),
                Err(err) => {
                    // The caller is told what happened; where Keystone is and why it failed
                    // are the operator's, in the log.
                    tracing::warn!(error = %err, "a management request's token could not be checked with Keystone");
                    Decision::Unavailable(
                        "The token cannot be checked now: the identity service does not answer. \
                         Try again later."
                            .into(),
                    )
                }
            }
        })
    }
}
