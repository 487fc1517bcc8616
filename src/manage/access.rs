//! Who may call the management routes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use http::header::{HeaderName, AUTHORIZATION};
use http::request;

/// Decides whether a request may use the management routes. Checked before anything else on
/// every management route: a denied caller learns nothing, not even that an id is malformed.
///
/// Implement [`ManageAccess::allows`] for a check that needs nothing but the request, or
/// [`ManageAccess::decide`] for one that asks another service (as the Keystone check does).
/// There is no allow-all implementation; a closure `Fn(&request::Parts) -> bool` can be one
/// if a deployment authorizes in front.
pub trait ManageAccess: Send + Sync + 'static {
    /// Whether this request may manage the cache. Unless [`ManageAccess::decide`] is
    /// implemented instead, this is the check; by default it allows nobody.
    fn allows(&self, request: &request::Parts) -> bool {
        let _ = request;
        false
    }

    /// The decision on this request; by default [`ManageAccess::allows`]'s answer (allowed or
    /// forbidden).
    fn decide(&self, request: &request::Parts) -> Decide {
        let decision = if self.allows(request) {
            Decision::Allow
        } else {
            Decision::Forbidden
        };
        Box::pin(std::future::ready(decision))
    }

    /// The `WWW-Authenticate` challenge sent with a 401 ([`Decision::Unauthenticated`]): where
    /// a caller gets a credential. None by default.
    fn challenge(&self) -> Option<String> {
        None
    }
}

/// What [`ManageAccess::decide`] returns: the decision, perhaps after asking another service.
pub type Decide = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// Whether a management request may go on, and if not, what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The caller may manage the cache.
    Allow,
    /// 403: the caller is known but may not manage the cache.
    Forbidden,
    /// 403 with a reason (for example which roles the caller has and which are needed).
    ForbiddenBecause(String),
    /// 401: the caller's credential is missing, unknown or expired; the reason says which. The
    /// reason is logged; the caller gets Glance's words (keystonemiddleware's 401 page) and the
    /// access check's [`ManageAccess::challenge`].
    Unauthenticated(String),
    /// 503: the check could not be made (the identity service is unreachable). Never an admit.
    Unavailable(String),
}

impl<F> ManageAccess for F
where
    F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
{
    fn allows(&self, request: &request::Parts) -> bool {
        self(request)
    }
}

/// Allows callers whose role header (by default `X-Roles`, a comma-separated list, as set by
/// keystonemiddleware) contains a role (by default `admin`).
///
/// Only for deployments where an authenticating middleware in front sets that header and
/// strips any the caller sent.
#[derive(Debug, Clone)]
#[must_use]
pub struct RoleHeader {
    header: HeaderName,
    role: String,
}

impl RoleHeader {
    /// `X-Roles` must contain `role`.
    pub fn new(role: impl Into<String>) -> Self {
        RoleHeader {
            header: HeaderName::from_static("x-roles"),
            role: role.into(),
        }
    }

    /// Reads the roles from another header.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }
}

impl Default for RoleHeader {
    fn default() -> Self {
        RoleHeader::new("admin")
    }
}

impl ManageAccess for RoleHeader {
    fn allows(&self, request: &request::Parts) -> bool {
        request
            .headers
            .get_all(&self.header)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|roles| roles.split(','))
            .any(|role| role.trim().eq_ignore_ascii_case(&self.role))
    }
}

/// Allows callers presenting one static token in `X-Auth-Token` (or `Authorization: Bearer`),
/// compared in constant time. A header given twice counts as not given.
#[derive(Clone)]
pub struct StaticToken {
    token: Vec<u8>,
}

impl StaticToken {
    /// The token callers must present. An empty token allows nobody.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken {
            token: token.into().into_bytes(),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken").finish_non_exhaustive()
    }
}

impl ManageAccess for StaticToken {
    fn allows(&self, request: &request::Parts) -> bool {
        let x_auth = only_one(&request.headers, "x-auth-token").map(|v| v.as_bytes());
        let bearer = only_one(&request.headers, AUTHORIZATION.as_str())
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        !self.token.is_empty()
            && [x_auth, bearer]
                .into_iter()
                .flatten()
                .any(|given| constant_time_eq(given, &self.token))
    }
}

/// The header's value when it is given exactly once: a repeated credential is ambiguous, and
/// refused rather than guessed at.
fn only_one<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a http::HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::get("/v2/cache");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn role_header_looks_for_the_role_in_the_list() {
        let access = RoleHeader::default();
        assert!(access.allows(&parts(&[("x-roles", "reader, admin")])));
        assert!(!access.allows(&parts(&[("x-roles", "reader,administrator")])));
        assert!(!access.allows(&parts(&[])));
    }

    #[test]
    fn static_token_needs_the_exact_token() {
        let access = StaticToken::new("s3cret");
        assert!(access.allows(&parts(&[("x-auth-token", "s3cret")])));
        assert!(access.allows(&parts(&[("authorization", "Bearer s3cret")])));
        for wrong in ["s3cre", "s3cret!", "", "S3CRET"] {
            assert!(
                !access.allows(&parts(&[("x-auth-token", wrong)])),
                "{wrong}"
            );
        }
        assert!(!StaticToken::new("").allows(&parts(&[("x-auth-token", "")])));
        // Given twice, even once right, it is ambiguous.
        for twice in [
            ["s3cret", "other"],
            ["other", "s3cret"],
            ["s3cret", "s3cret"],
        ] {
            let headers = twice.map(|token| ("x-auth-token", token));
            assert!(!access.allows(&parts(&headers)), "{twice:?}");
        }
    }

    #[test]
    fn a_closure_is_an_access_check() {
        let access = |request: &request::Parts| request.headers.contains_key("x-operator");
        assert!(access.allows(&parts(&[("x-operator", "1")])));
        assert!(!access.allows(&parts(&[])));
    }
}
