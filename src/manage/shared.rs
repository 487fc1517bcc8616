//! What every clone of a [`CacheManageService`](super::CacheManageService) shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::access::ManageAccess;
use super::identity::Identity;
use crate::route::RouteTemplate;
use crate::store::ImageCache;
use crate::sync::Member;

/// What every clone of a [`CacheManageService`] shares.
pub(crate) struct Shared {
    pub(crate) cache: ImageCache,
    pub(crate) access: Arc<dyn ManageAccess>,
    pub(crate) metadata: RouteTemplate,
    pub(crate) identity: Identity,
    /// Counts this service among the layer's live ones (see `CacheManageLayer`).
    pub(crate) wrapped: Member,
    /// The layer was given the service its own requests go to (`api_through`).
    pub(crate) api_given: bool,
    /// Set while one service of the layer runs the prefetcher.
    pub(crate) prefetching: Arc<AtomicBool>,
    /// How long the layer's own requests wait for the image API's response head.
    pub(crate) response_timeout: Option<std::time::Duration>,
}

impl Shared {
    /// Whether the layer wraps several services at once, as axum's `Router::layer` makes it do.
    pub(crate) fn wraps_single_routes(&self) -> bool {
        !self.api_given && self.wrapped.alive() > 1
    }
}
