//! [`FillRequest`]: how the wrapped service tells the cache's own reads of an image apart, and
//! [`FillSource`]: how its answer says where the bytes come from.

use crate::ImageId;

/// Marks a request the cache layer sends to the wrapped service to fill its cache with an
/// image, or to resume that fill from a byte on, after the access check admitted the caller.
///
/// Every other request the wrapped service gets (the caller's own, the access check's metadata
/// request and download probe, a range of an image not cached) lacks it. A service behind the
/// layer may answer a marked request from another copy of the same image, a peer cache node's
/// say: the caller may read the image, and the bytes are verified against the image's checksum
/// (from the API's metadata) before anything is committed.
///
/// ```
/// use http::Request;
/// use tower_image_cache::layer::FillRequest;
///
/// fn from_a_peer<B>(request: &Request<B>) -> Option<&str> {
///     request.extensions().get::<FillRequest>().map(|fill| fill.image().as_str())
/// }
/// # assert_eq!(from_a_peer(&Request::new(())), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillRequest {
    image: ImageId,
}

impl FillRequest {
    pub(crate) fn new(image: ImageId) -> Self {
        FillRequest { image }
    }

    /// The image being filled.
    pub fn image(&self) -> &ImageId {
        &self.image
    }
}

/// Where the wrapped service's answer to a [`FillRequest`] takes its bytes from, as a response
/// extension it may set: the cache counts a fill's bytes by source
/// (`image_cache_bytes_total{source}`, `image_cache_fill_sources_total{source}`). An answer
/// without it is the upstream's.
///
/// The cache's own response to a miss that fills carries it too (where the fill's first bytes
/// came from), for an access log in front.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FillSource {
    /// The image API behind the cache.
    #[default]
    Upstream,
    /// Another cache node's copy of the image.
    Peer,
    /// Another cache node's fill of the image in progress, followed at its pace.
    Follow,
}

impl FillSource {
    /// The source of `response`'s bytes.
    pub(crate) fn of<B>(response: &http::Response<B>) -> Self {
        response
            .extensions()
            .get::<FillSource>()
            .copied()
            .unwrap_or_default()
    }

    /// Its name: the `source` label of the metrics, and the access log's `fill_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            FillSource::Upstream => "upstream",
            FillSource::Peer => "peer",
            FillSource::Follow => "follow",
        }
    }
}

/// The resumes of a fill, carried by the cache's response to the miss that fills (a response
/// extension shared with the fill, which adds to it as it goes): each time the fill's source
/// was cut and the fill went on from the byte reached, that byte and where the rest came from.
/// An access log written when the body ends reads it then.
#[derive(Debug, Clone, Default)]
pub struct FillResumes(std::sync::Arc<std::sync::Mutex<Vec<(u64, FillSource)>>>);

impl FillResumes {
    /// Each resume so far: the byte it went on from, and the source of the bytes after it.
    pub fn list(&self) -> Vec<(u64, FillSource)> {
        crate::sync::lock(&self.0).clone()
    }

    pub(crate) fn push(&self, from: u64, source: FillSource) {
        crate::sync::lock(&self.0).push((from, source));
    }
}
