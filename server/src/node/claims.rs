//! This node's claims in the fleet's table (`Fleet::claim_fill`): the read of an image for the
//! whole fleet, or into this node's zone, renewed while the fill runs and released after it.

use std::time::Duration;

use axum::body::Body;
use http::Response;
use http_body_util::BodyExt;
use tower_image_cache::store::{FillScope, Fleet, FILL_CLAIM_LIFETIME};
use tower_image_cache::ImageId;

/// How long a claim stays after its fill's body ended: a moment for the commit's row to reach
/// the fleet's table, so a node asking in between finds the image held rather than unclaimed.
const CLAIM_AFTERGLOW: Duration = Duration::from_secs(2);

/// One claim of this node, renewed while it is held and released when dropped.
struct Claim {
    heartbeat: tokio::task::JoinHandle<()>,
    release: Option<(Fleet, ImageId, FillScope)>,
}

impl Claim {
    fn hold(fleet: Fleet, id: ImageId, scope: FillScope) -> Self {
        let (renewing, image, renewed) = (fleet.clone(), id.clone(), scope.clone());
        let heartbeat = tokio::spawn(async move {
            let every = FILL_CLAIM_LIFETIME / 3;
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = renewing.renew_fill(&image, &renewed).await {
                    tracing::warn!(image = %image, %err, "the fill's claim could not be renewed");
                }
            }
        });
        Claim {
            heartbeat,
            release: Some((fleet, id, scope)),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some((fleet, id, scope)) = self.release.take() {
            // Outside a runtime (the node stopping) the claim lapses by itself.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                tokio::time::sleep(CLAIM_AFTERGLOW).await;
                if let Err(err) = fleet.release_fill(&id, &scope).await {
                    tracing::warn!(image = %id, %err, "the fill's claim could not be released; it lapses by itself");
                }
            });
        }
    }
}

/// The claims a fill holds: none, its zone's, the fleet's, or both.
#[derive(Default)]
pub(crate) struct Claims(Vec<Claim>);

impl Claims {
    /// Adds this node's claim of `id` in `scope` (just won).
    pub(crate) fn hold(&mut self, fleet: &Fleet, id: &ImageId, scope: FillScope) {
        match &scope {
            FillScope::Zone(zone) => {
                tracing::info!(image = %id, %zone, "reading the image into this node's zone");
            }
            _ => tracing::info!(image = %id, "reading the image from the upstream for the fleet"),
        }
        self.0.push(Claim::hold(fleet.clone(), id.clone(), scope));
    }

    /// `response`'s body, holding these claims until it is read or dropped.
    pub(crate) fn ride(self, response: Response<Body>) -> Response<Body> {
        if self.0.is_empty() {
            return response;
        }
        response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _held = &self;
                frame
            }))
        })
    }
}
