//! Who the fleet is: how this node shows its peers it is one of the fleet, and how the peer
//! route tells the fleet's nodes from everyone else (`[cache_server] peer_token`, or a Keystone
//! identity with a role of `peer_roles`).

use std::sync::Arc;

use http::{HeaderMap, Request, StatusCode};
use tower_image_cache::keystone::Keystone;
use tower_image_cache::manage::{Decision, KeystoneAccess, ManageAccess, StaticToken};

/// How this node shows its peers it is one of the fleet.
#[derive(Clone)]
pub(crate) enum PeerIdentity {
    /// `[cache_server] peer_token`, the secret the fleet's nodes share.
    Shared(Arc<str>),
    /// The node's own Keystone identity, admitted by the peers for its role (`peer_roles`).
    Keystone(Keystone),
}

impl PeerIdentity {
    /// The token to send a peer now.
    pub(crate) async fn token(&self) -> Result<String, String> {
        match self {
            PeerIdentity::Shared(token) => Ok(token.to_string()),
            PeerIdentity::Keystone(keystone) => keystone
                .token()
                .await
                .map(|token| token.id.expose().to_owned())
                .map_err(|err| format!("this node has no Keystone token to show: {err}")),
        }
    }
}

/// Whom the peer route admits: callers showing the fleet's shared token, or a Keystone token
/// with one of the peer roles; nobody else, whatever the node holds.
#[derive(Clone)]
pub(crate) struct Admission {
    shared: Option<Arc<StaticToken>>,
    keystone: Option<KeystoneAccess>,
}

/// Why the peer route refuses a caller: the status, and what the caller is told.
pub(crate) struct Refused(pub(crate) StatusCode, pub(crate) &'static str);

impl Admission {
    /// Admits the `shared` token, and Keystone tokens with one of `roles` checked by
    /// `keystone` (the node's own identity).
    pub(crate) fn new(shared: Option<&str>, keystone: Option<(Keystone, Vec<String>)>) -> Self {
        Admission {
            shared: shared.map(|token| Arc::new(StaticToken::new(token))),
            keystone: keystone.map(|(keystone, roles)| KeystoneAccess::new(keystone).roles(roles)),
        }
    }

    /// Whether the caller of `headers` is one of the fleet's nodes.
    pub(crate) async fn admit(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(token) = headers.get("x-auth-token") else {
            return Err(Refused(
                StatusCode::UNAUTHORIZED,
                "This route serves the fleet's own nodes: send the fleet's peer_token, or a \
                 token of the nodes' Keystone identity, as X-Auth-Token.",
            ));
        };
        let forbidden = Refused(
            StatusCode::FORBIDDEN,
            "This route serves the fleet's own nodes only; download images through \
             /v2/images/{id}/file.",
        );
        let mut parts = Request::new(()).into_parts().0;
        parts.headers.insert("x-auth-token", token.clone());
        if self
            .shared
            .as_ref()
            .is_some_and(|shared| shared.allows(&parts))
        {
            return Ok(());
        }
        let Some(keystone) = &self.keystone else {
            return Err(forbidden);
        };
        match keystone.decide(&parts).await {
            Decision::Allow => Ok(()),
            Decision::Unauthenticated(_) => Err(Refused(
                StatusCode::UNAUTHORIZED,
                "The token is unknown, expired or revoked: get a new one from Keystone.",
            )),
            Decision::Unavailable(_) => Err(Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "The token cannot be checked now: the identity service does not answer. Try \
                 again later.",
            )),
            _ => Err(forbidden),
        }
    }
}
