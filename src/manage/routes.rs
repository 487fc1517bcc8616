//! The management routes: which path is which endpoint, and the methods each allows.

use http::Method;

/// A management endpoint, with the raw (still unvalidated) id segment where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    /// `/v2/cache`
    Cache,
    /// `/v2/cache/{id}`
    CacheImage(&'a str),
    /// `/v2/cache/clean`
    Clean,
    /// `/v2/cache/prune`
    Prune,
    /// `/v2/cache/prefetch`
    Prefetch,
    /// `/v2/cache/nodes` (this crate's: every node of the fleet)
    NodeList,
    /// `/v2/cache/nodes/{id}`
    Nodes(&'a str),
    /// `/v2/cached_images`, `/cached-images`
    CachedImages,
    /// `/v2/cached_images/{id}`, `/cached-images/{id}`
    CachedImage(&'a str),
    /// `/v2/queued_images`
    QueuedImages,
    /// `/v2/queued_images/{id}`, `/queued/{id}`
    QueuedImage(&'a str),
}

impl<'a> Endpoint<'a> {
    /// The endpoint `path` names, if it is a management route.
    pub(crate) fn parse(path: &'a str) -> Option<Self> {
        // Every request passes here (the management layer is outermost): no allocation.
        let mut split = path.strip_prefix('/')?.split('/');
        let mut segments = [""; 4];
        let mut count = 0;
        for segment in split.by_ref().take(segments.len()) {
            segments[count] = segment;
            count += 1;
        }
        if split.next().is_some() {
            return None;
        }
        Some(match &segments[..count] {
            ["v2", "cache"] => Endpoint::Cache,
            ["v2", "cache", "clean"] => Endpoint::Clean,
            ["v2", "cache", "prune"] => Endpoint::Prune,
            ["v2", "cache", "prefetch"] => Endpoint::Prefetch,
            ["v2", "cache", "nodes"] => Endpoint::NodeList,
            ["v2", "cache", "nodes", id] => Endpoint::Nodes(id),
            ["v2", "cache", id] => Endpoint::CacheImage(id),
            ["v2", "cached_images"] | ["cached-images"] => Endpoint::CachedImages,
            ["v2", "cached_images", id] | ["cached-images", id] => Endpoint::CachedImage(id),
            ["v2", "queued_images"] => Endpoint::QueuedImages,
            ["v2", "queued_images", id] | ["queued", id] => Endpoint::QueuedImage(id),
            _ => return None,
        })
    }

    /// The methods this endpoint answers, as the `Allow` header lists them.
    pub(crate) fn allowed(&self) -> &'static [Method] {
        match self {
            Endpoint::Cache => &[Method::GET, Method::DELETE],
            Endpoint::CacheImage(_) => &[Method::DELETE, Method::PUT],
            Endpoint::Clean | Endpoint::Prune | Endpoint::Prefetch => &[Method::POST],
            Endpoint::Nodes(_) | Endpoint::NodeList => &[Method::GET],
            Endpoint::CachedImages | Endpoint::QueuedImages => &[Method::GET, Method::DELETE],
            Endpoint::CachedImage(_) => &[Method::DELETE],
            Endpoint::QueuedImage(_) => &[Method::DELETE, Method::PUT],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_and_legacy_and_operator_doc_paths() {
        assert_eq!(Endpoint::parse("/v2/cache"), Some(Endpoint::Cache));
        assert_eq!(
            Endpoint::parse("/v2/cache/abc"),
            Some(Endpoint::CacheImage("abc"))
        );
        assert_eq!(Endpoint::parse("/v2/cache/prune"), Some(Endpoint::Prune));
        assert_eq!(
            Endpoint::parse("/v2/cache/nodes/abc"),
            Some(Endpoint::Nodes("abc"))
        );
        assert_eq!(
            Endpoint::parse("/v2/cached_images/abc"),
            Some(Endpoint::CachedImage("abc"))
        );
        assert_eq!(
            Endpoint::parse("/cached-images"),
            Some(Endpoint::CachedImages)
        );
        assert_eq!(
            Endpoint::parse("/cached-images/abc"),
            Some(Endpoint::CachedImage("abc"))
        );
        assert_eq!(
            Endpoint::parse("/queued/abc"),
            Some(Endpoint::QueuedImage("abc"))
        );
        assert_eq!(Endpoint::parse("/v2/cache/a/b"), None);
        assert_eq!(Endpoint::parse("/v2/cache/nodes/a/b"), None);
        assert_eq!(Endpoint::parse("/v2/cache/nodes/a/"), None);
        assert_eq!(Endpoint::parse("/v2/images/abc"), None);
        assert_eq!(
            Endpoint::parse("/v2/cache/"),
            Some(Endpoint::CacheImage(""))
        );
    }
}
