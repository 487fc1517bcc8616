//! What the layers ask of a body: [`BoxError`] and the crate's `ResponseBody` bound.

use http_body::Body;

/// The error type of the cache's response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the layers ask of a wrapped service's response body: sendable, with sendable data and
/// an error that boxes (written once here instead of at every function that moves one).
pub(crate) trait ResponseBody:
    Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ResponseBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}
