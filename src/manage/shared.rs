//! What every clone of a [`CacheManageService`](super::CacheManageService) shares.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// How many services the layer wrapped (see `CacheManageLayer`).
    pub(crate) wrapped: Arc<AtomicUsize>,
}

impl Shared {
    /// Whether the layer wraps several services, as axum's `Router::layer` makes it do.
    pub(crate) fn wraps_single_routes(&self) -> bool {
        self.wrapped.load(Ordering::Relaxed) > 1
    }
}
