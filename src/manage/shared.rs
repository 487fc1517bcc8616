//! What every clone of a [`CacheManageService`](super::CacheManageService) shares.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderMap;

use super::access::ManageAccess;
use crate::route::RouteTemplate;
use crate::store::ImageCache;

/// What every clone of a [`CacheManageService`] shares.
pub(crate) struct Shared {
    pub(crate) cache: ImageCache,
    pub(crate) access: Arc<dyn ManageAccess>,
    pub(crate) metadata: RouteTemplate,
    pub(crate) identity: HeaderMap,
    /// How many services of the layer are alive (see `CacheManageLayer`); this one counts
    /// itself until it is dropped.
    pub(crate) wrapped: Arc<AtomicUsize>,
    /// The layer was given the service its own requests go to (`api_through`).
    pub(crate) api_given: bool,
    /// Set while one service of the layer runs the prefetcher.
    pub(crate) prefetching: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wrapped.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Whether the layer wraps several services at once, as axum's `Router::layer` makes it do.
    pub(crate) fn wraps_single_routes(&self) -> bool {
        !self.api_given && self.wrapped.load(Ordering::Relaxed) > 1
    }
}
