//! Access decisions remembered: a caller's *allowed* check for one image, reused for
//! `authorization_cache_time` without asking, and able to admit a hit for
//! `authorization_stale_if_error` more while the image API fails (RFC 5861's `stale-if-error`).
//! Refusals are never remembered; a decision voided by the image's delete, deactivation,
//! re-upload or member change (seen here or announced by the fleet) admits nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::access::is_callers;
use crate::image_meta::ImageMeta;
use crate::sync::lock;
use crate::{ImageCache, ImageId};

/// Decisions kept at most; past it, the oldest goes.
const MAX_DECISIONS: usize = 10_000;

/// Headers that name the request, not the caller: left out of the key, or every request
/// would be a caller of its own.
const NOT_IDENTITY: [&str; 5] = [
    "x-openstack-request-id",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
];

/// One caller's view of one image: the image and a SHA-256 of the caller's headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    id: ImageId,
    caller: [u8; 32],
}

impl Key {
    /// The key of the caller of `headers` (those the access check forwards) for `id`.
    pub(crate) fn new(id: &ImageId, headers: &HeaderMap) -> Self {
        // What the access check forwards of the caller's headers, read in place.
        let mut pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(name, _)| is_callers(name) && !NOT_IDENTITY.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        pairs.sort();
        let mut digest = Sha256::new();
        for (name, value) in pairs {
            digest.update((name.len() as u64).to_le_bytes());
            digest.update(name.as_bytes());
            digest.update((value.len() as u64).to_le_bytes());
            digest.update(value);
        }
        Key {
            id: id.clone(),
            caller: digest.finalize().into(),
        }
    }
}

/// The remembered decisions of one layer.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    /// `authorization_cache_time`.
    fresh_for: Option<Duration>,
    /// `authorization_stale_if_error`.
    stale_for: Option<Duration>,
    /// Shared with the downloads they admit: a remembered hit copies no metadata.
    remembered: Mutex<HashMap<Key, (Instant, Arc<ImageMeta>)>>,
}

impl Decisions {
    pub(crate) fn new(fresh_for: Option<Duration>, stale_for: Option<Duration>) -> Self {
        Decisions {
            fresh_for: fresh_for.filter(|d| !d.is_zero()),
            stale_for: stale_for.filter(|d| !d.is_zero()),
            remembered: Mutex::default(),
        }
    }

    /// Whether decisions are remembered at all.
    pub(crate) fn is_kept(&self) -> bool {
        self.fresh_for.is_some() || self.stale_for.is_some()
    }

    fn lifetime(&self) -> Option<Duration> {
        match (self.fresh_for, self.stale_for) {
            (None, None) => None,
            (fresh, stale) => Some(fresh.unwrap_or_default() + stale.unwrap_or_default()),
        }
    }

    /// The decision for `key` if it is younger than `age` and was not voided since.
    fn younger_than(&self, cache: &ImageCache, key: &Key, age: Duration) -> Option<Arc<ImageMeta>> {
        let remembered = lock(&self.remembered);
        let (decided, meta) = remembered.get(key)?;
        (decided.elapsed() < age && !cache.voided_since(&key.id, *decided))
            .then(|| Arc::clone(meta))
    }

    /// A decision that may be used without asking (within `authorization_cache_time`).
    pub(crate) fn fresh(&self, cache: &ImageCache, key: &Key) -> Option<Arc<ImageMeta>> {
        self.younger_than(cache, key, self.fresh_for?)
    }

    /// A decision that may admit a hit while the image API fails (within
    /// `authorization_cache_time` plus `authorization_stale_if_error`).
    pub(crate) fn stale(&self, cache: &ImageCache, key: &Key) -> Option<Arc<ImageMeta>> {
        self.stale_for?;
        self.younger_than(cache, key, self.lifetime()?)
    }

    /// Remembers an allowed check (when decisions are kept at all).
    pub(crate) fn remember(&self, key: Key, meta: &Arc<ImageMeta>) {
        let Some(lifetime) = self.lifetime() else {
            return;
        };
        let mut remembered = lock(&self.remembered);
        if remembered.len() >= MAX_DECISIONS && !remembered.contains_key(&key) {
            remembered.retain(|_, (decided, _)| decided.elapsed() < lifetime);
            if remembered.len() >= MAX_DECISIONS {
                let oldest = remembered
                    .iter()
                    .min_by_key(|(_, (decided, _))| *decided)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    remembered.remove(&oldest);
                }
            }
        }
        remembered.insert(key, (Instant::now(), Arc::clone(meta)));
    }

    /// Forgets `key`'s decision (the API refused it since).
    pub(crate) fn forget(&self, key: &Key) {
        lock(&self.remembered).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(token: &str, request_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-auth-token", HeaderValue::from_str(token).unwrap());
        headers.insert(
            "x-openstack-request-id",
            HeaderValue::from_str(request_id).unwrap(),
        );
        headers.insert("range", HeaderValue::from_static("bytes=0-1"));
        headers
    }

    #[test]
    fn a_key_is_the_caller_not_the_request() {
        let id = ImageId::new("img").unwrap();
        assert_eq!(
            Key::new(&id, &headers("a", "req-1")),
            Key::new(&id, &headers("a", "req-2"))
        );
        assert_ne!(
            Key::new(&id, &headers("a", "req-1")),
            Key::new(&id, &headers("b", "req-1"))
        );
        // The download's own headers (its range, its conditions) are not the caller.
        let mut other_range = headers("a", "r");
        other_range.insert("range", HeaderValue::from_static("bytes=100-"));
        other_range.insert("if-none-match", HeaderValue::from_static("\"x\""));
        let mut no_range = headers("a", "r");
        no_range.remove("range");
        assert_eq!(
            Key::new(&id, &other_range),
            Key::new(&id, &headers("a", "r"))
        );
        assert_eq!(Key::new(&id, &no_range), Key::new(&id, &headers("a", "r")));
        let other = ImageId::new("other").unwrap();
        assert_ne!(
            Key::new(&id, &headers("a", "r")),
            Key::new(&other, &headers("a", "r"))
        );
    }

    #[test]
    fn decisions_are_bounded_in_number() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(crate::CacheConfig::new(dir.path())).unwrap();
        let decisions = Decisions::new(Some(Duration::from_secs(60)), None);
        let id = ImageId::new("img").unwrap();
        for i in 0..MAX_DECISIONS + 10 {
            decisions.remember(
                Key::new(&id, &headers(&format!("t{i}"), "r")),
                &Arc::default(),
            );
        }
        assert_eq!(lock(&decisions.remembered).len(), MAX_DECISIONS);
        let newest = Key::new(&id, &headers(&format!("t{}", MAX_DECISIONS + 9), "r"));
        assert!(decisions.fresh(&cache, &newest).is_some());
        assert!(decisions
            .fresh(&cache, &Key::new(&id, &headers("t0", "r")))
            .is_none());
        cache.void_access_decisions(&id);
        assert!(decisions.fresh(&cache, &newest).is_none(), "voided");
        assert!(
            decisions.stale(&cache, &newest).is_none(),
            "no stale window configured"
        );
    }
}
