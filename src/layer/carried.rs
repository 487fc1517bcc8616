//! Request extensions the layer's own requests carry: `CacheLayer::carry_extension` names the
//! types an outer layer sets (an auth layer's claims, axum's `ConnectInfo`) that the wrapped
//! service needs to answer as it would the caller.

use std::fmt;
use std::sync::Arc;

use http::{request, Extensions};

/// Copies one type's value from the caller's extensions into a request's.
type Copy = fn(&Extensions, &mut Extensions);

/// The extension types to carry (none by default).
#[derive(Clone, Default)]
pub(crate) struct CarriedTypes(Arc<[Copy]>);

impl fmt::Debug for CarriedTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CarriedTypes({} types)", self.0.len())
    }
}

fn copy<T: Clone + Send + Sync + 'static>(from: &Extensions, to: &mut Extensions) {
    if let Some(value) = from.get::<T>() {
        to.insert(value.clone());
    }
}

/// The caller's values of the carried types, kept in the parts the access check is given.
#[derive(Clone)]
struct Carried(Extensions);

impl CarriedTypes {
    /// These types and `T`.
    pub(crate) fn with<T: Clone + Send + Sync + 'static>(&self) -> Self {
        let mut types = self.0.to_vec();
        types.push(copy::<T>);
        CarriedTypes(types.into())
    }

    /// Keeps the caller's values of the carried types in `parts`, for the requests made on its
    /// behalf ([`carried`]).
    pub(crate) fn keep(&self, parts: &mut request::Parts) {
        if self.0.is_empty() {
            return;
        }
        let mut carried = Extensions::new();
        for copy in self.0.iter() {
            copy(&parts.extensions, &mut carried);
        }
        parts.extensions.insert(Carried(carried));
    }
}

/// The extensions a request made on behalf of the caller of `parts` carries: the values of
/// the types named with `carry_extension`, and nothing else (routers keep their match state in
/// extensions; axum appends the path parameters it finds to those present).
pub(crate) fn carried(parts: &request::Parts) -> Extensions {
    parts
        .extensions
        .get::<Carried>()
        .map(|carried| carried.0.clone())
        .unwrap_or_default()
}
