//! Who the fleet is: how this node shows its peers it is one of the fleet, and how the peer
//! route tells the fleet's nodes from everyone else (`[cache_server] peer_token`, or a Keystone
//! identity with a role of `peer_roles`).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use tower_image_cache::keystone::Keystone;
use tower_image_cache::manage::{Decision, KeystoneAccess, ManageAccess};
use tower_image_cache::ImageCache;

use super::options::ServerSettings;
use super::peers::Peers;

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
    shared: Option<Arc<str>>,
    keystone: Option<KeystoneAccess>,
}

/// Why the peer route refuses a caller: the status, and what the caller is told.
pub(crate) struct Refused(pub(crate) StatusCode, pub(crate) &'static str);

impl Admission {
    /// Admits the `shared` token, and Keystone tokens with one of `roles` checked by
    /// `keystone` (the node's own identity).
    pub(crate) fn new(shared: Option<&str>, keystone: Option<(Keystone, Vec<String>)>) -> Self {
        Admission {
            shared: shared.map(Arc::from),
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
        if let Some(shared) = &self.shared {
            if same_secret(token.as_bytes(), shared.as_bytes()) {
                return Ok(());
            }
        }
        let Some(keystone) = &self.keystone else {
            return Err(forbidden);
        };
        let mut parts = Request::new(()).into_parts().0;
        parts.headers.insert("x-auth-token", token.clone());
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

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let differences = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == expected.len() && differences == 0
}

/// This node's peers and its peer route's admission, from `settings`: neither when the node
/// has neither `peer_token` nor `peer_roles` with a Keystone identity; no peers when it
/// belongs to no fleet.
pub(crate) fn fleet_peers(
    settings: &ServerSettings,
    cache: &ImageCache,
    keystone: Option<&Keystone>,
) -> Result<(Option<Peers>, Option<Admission>), String> {
    let by_role = match (keystone, settings.peer_roles.is_empty()) {
        (Some(keystone), false) => Some((keystone.clone(), settings.peer_roles.clone())),
        (None, false) => {
            tracing::warn!("peer_roles is set, but the node has no Keystone identity to check tokens with or to show its peers; only peer_token is admitted");
            None
        }
        _ => None,
    };
    let identity = match (&settings.peer_token, &by_role) {
        (Some(token), _) => PeerIdentity::Shared(Arc::from(token.as_str())),
        (None, Some((keystone, _))) => PeerIdentity::Keystone(keystone.clone()),
        (None, None) => return Ok((None, None)),
    };
    let admission = Admission::new(settings.peer_token.as_deref(), by_role);
    let Some(fleet) = cache.fleet() else {
        tracing::warn!("peer_token or peer_roles is set, but the node is no member of a fleet (image_cache_driver = centralized_db): its fills come from the upstream");
        return Ok((None, Some(admission)));
    };
    let zone = settings.peer_zone.clone();
    tokio::spawn(async move {
        // Until the fleet's database takes it: a node started while the database is away
        // still tells its zone once it is back.
        while let Err(err) = fleet.set_zone(zone.as_deref()).await {
            tracing::warn!(%err, "this node's zone could not be recorded; trying again in 10 s");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let idle = settings.upstream_timeouts.idle;
    let peers = Peers::new(cache, identity, settings.peer_zone.as_deref(), idle)?;
    Ok((Some(peers), Some(admission)))
}
