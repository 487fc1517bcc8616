//! What every clone of a [`CacheManageService`](super::CacheManageService) shares.

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
}
