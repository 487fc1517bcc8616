//! This node's part in the fleet's peer fills, from its settings: whom it asks (and as whom),
//! whom its peer route admits, and its zone recorded in the fleet's table.

use std::sync::Arc;
use std::time::Duration;

use tower_image_cache::keystone::Keystone;
use tower_image_cache::ImageCache;

use super::options::ServerSettings;
use super::peer_identity::{Admission, PeerIdentity};
use super::peers::Peers;

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
    let zone = settings.peer_zone.as_deref();
    let peers = Peers::new(cache, identity, zone, idle, settings.peer_min_rate)?;
    Ok((Some(peers), Some(admission)))
}
