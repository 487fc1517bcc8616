//! The fleet's reads in flight ([`Fleet::claim_fill`]) and its sites ([`Fleet::set_zone`]):
//! which node reads an image for the whole fleet, or for its zone, so the others follow it.

use std::collections::HashMap;
use std::time::Duration;

use super::clock::now;
use super::fleet::{Fleet, FleetError};
use crate::ImageId;

/// Who reads an image now ([`Fleet::claim_fill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FillClaim {
    /// This node: it reads the image, and the other nodes follow it. Renew the claim within
    /// [`FILL_CLAIM_LIFETIME`] while the fill runs, and release it at its end.
    Ours,
    /// Another node, by its URL: follow its fill rather than read the image again.
    Theirs(String),
}

/// What a fill claim covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FillScope {
    /// The one read of the image from the backend, for the whole fleet.
    Fleet,
    /// The one read of the image into a zone (`[cache_server] peer_zone`), from a node of
    /// another zone or from the backend: the zone's other nodes follow the claimant.
    Zone(String),
}

impl FillScope {
    /// The scope's key in the claims table: `''` for the fleet, else the zone's name.
    fn key(&self) -> &str {
        match self {
            FillScope::Fleet => "",
            FillScope::Zone(zone) => zone,
        }
    }
}

/// How long a fill claim stands without a heartbeat: past it, the claimant counts as dead and
/// another node may claim the image.
pub const FILL_CLAIM_LIFETIME: Duration = Duration::from_secs(10);

/// The longest zone name the fleet's table keeps.
pub const ZONE_NAME_MAX: usize = 64;

impl Fleet {
    /// Claims the reading of `id` in `scope` for this node, unless another node's fresh claim
    /// stands: of nodes claiming at once, one gets [`FillClaim::Ours`] and the others learn its
    /// URL. Only a node's own fleet handle (`ImageCache::fleet`) can claim.
    pub async fn claim_fill(
        &self,
        id: &ImageId,
        scope: &FillScope,
    ) -> Result<FillClaim, FleetError> {
        let node = self.claimant()?;
        let (id, scope) = (id.clone(), scope.key().to_owned());
        let at = now();
        let stale_before = at - FILL_CLAIM_LIFETIME.as_secs_f64();
        let mine = node.clone();
        let claimant = self
            .run(|db| async move { db.claim_fill((&id, &scope), &mine, at, stale_before).await })
            .await?;
        Ok(if claimant == node {
            FillClaim::Ours
        } else {
            FillClaim::Theirs(claimant)
        })
    }

    /// The nodes reading `id` now, for the fleet or into their zones (their claims are fresh),
    /// sorted.
    pub async fn nodes_filling(&self, id: &ImageId) -> Result<Vec<String>, FleetError> {
        let id = id.clone();
        let fresh_after = now() - FILL_CLAIM_LIFETIME.as_secs_f64();
        self.run(|db| async move { db.claimants_of(&id, fresh_after).await })
            .await
    }

    /// Renews this node's claim of `id` in `scope` (its heartbeat).
    pub async fn renew_fill(&self, id: &ImageId, scope: &FillScope) -> Result<(), FleetError> {
        let (node, id, scope) = (self.claimant()?, id.clone(), scope.key().to_owned());
        self.run(|db| async move { db.renew_fill((&id, &scope), &node, now()).await })
            .await
    }

    /// Ends this node's claim of `id` in `scope`: its fill is over (committed or failed).
    pub async fn release_fill(&self, id: &ImageId, scope: &FillScope) -> Result<(), FleetError> {
        let (node, id, scope) = (self.claimant()?, id.clone(), scope.key().to_owned());
        self.run(|db| async move { db.release_fill((&id, &scope), &node).await })
            .await
    }

    /// Records this node's zone (`[cache_server] peer_zone`), or that it has none. A zone's
    /// name is 1 to [`ZONE_NAME_MAX`] letters, digits, `.`, `_` or `-`.
    pub async fn set_zone(&self, zone: Option<&str>) -> Result<(), FleetError> {
        if let Some(zone) = zone {
            check_zone_name(zone).map_err(FleetError)?;
        }
        let (node, zone) = (self.claimant()?, zone.map(str::to_owned));
        self.run(|db| async move { db.set_zone(&node, zone.as_deref()).await })
            .await
    }

    /// The zone of every node that has one, by node URL.
    pub async fn zones(&self) -> Result<HashMap<String, String>, FleetError> {
        let rows = self.run(|db| async move { db.zones().await }).await?;
        Ok(rows.into_iter().collect())
    }
}

/// Whether `zone` can name a zone: why not, as a sentence.
pub fn check_zone_name(zone: &str) -> Result<(), String> {
    let fits = !zone.is_empty()
        && zone.len() <= ZONE_NAME_MAX
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "peer_zone {zone:?} cannot name a zone: use 1 to {ZONE_NAME_MAX} letters, digits, \
             '.', '_' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_short_plain_words() {
        for good in ["edge-1", "site_a", "dc.eu.west", "Z"] {
            assert_eq!(check_zone_name(good), Ok(()), "{good}");
        }
        let long = "z".repeat(ZONE_NAME_MAX + 1);
        for bad in ["", "a b", "site/a", "zone'", long.as_str()] {
            let refused = check_zone_name(bad).expect_err(bad);
            assert!(refused.contains("cannot name a zone"), "{refused}");
        }
    }

    #[test]
    fn the_fleet_scope_is_the_empty_key_which_no_zone_can_take() {
        assert_eq!(FillScope::Fleet.key(), "");
        assert_eq!(FillScope::Zone("edge".into()).key(), "edge");
        assert!(check_zone_name(FillScope::Fleet.key()).is_err());
    }
}
