//! The access check: may this caller download this image now?
//!
//! A cached copy must never reach a caller the wrapped service would refuse, nor be served
//! after the image was deleted or deactivated, so every request the cache would answer is
//! first put to an [`AccessCheck`].

use std::future::Future;
use std::pin::Pin;

use http::header::HeaderName;
use http::{header, request, HeaderMap, Request};
use tower_service::Service;

use super::carried::carried;
use crate::image_meta::ImageMeta;
use crate::ImageId;

/// The verdict of an [`AccessCheck`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Access<R> {
    /// The caller may download the image: serve it from the cache (or fill the cache).
    Serve(ImageMeta),
    /// The image exists but is not to be served from the cache now (for instance deactivated):
    /// the original request goes to the wrapped service, which decides.
    PassThrough,
    /// The caller may not see the image: this response (the wrapped service's own 401, 403 or
    /// 404) is returned as it is.
    Deny(R),
    /// The wrapped service could not decide (it answered 5xx: the image API behind it is
    /// down or failing). The caller gets `503` with `Retry-After`, unless a decision remembered
    /// for it admits a hit (`authorization_stale_if_error`); this response is not returned.
    Unavailable(R),
}

/// The future an [`AccessCheck`] returns.
pub type CheckFuture<R, E> = Pin<Box<dyn Future<Output = Result<Access<R>, E>> + Send + 'static>>;

/// Decides whether a request may be answered from the cache.
///
/// `inner` is a clone of the wrapped service, for checks that ask it (it has not been polled
/// ready; use `ServiceExt::oneshot`). `request` holds the caller's method, URI and headers.
pub trait AccessCheck<S, ReqBody>: Clone + Send + Sync + 'static
where
    S: Service<Request<ReqBody>>,
{
    /// Checks whether the caller of `request` may download `id`.
    fn check(
        &self,
        inner: S,
        request: &request::Parts,
        id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error>;
}

/// The caller's headers minus those that describe the download rather than the caller.
pub(crate) fn caller_headers(headers: &HeaderMap) -> HeaderMap {
    let mut copy = headers.clone();
    for name in &DOWNLOAD_HEADERS {
        copy.remove(name);
    }
    copy
}

/// Whether a header with this name is the caller's ([`caller_headers`] keeps it).
pub(crate) fn is_callers(name: &HeaderName) -> bool {
    !DOWNLOAD_HEADERS.contains(name)
}

/// What describes the caller's own download (its part, its conditions, its body and its
/// connection), left out of a request made on its behalf.
const DOWNLOAD_HEADERS: [HeaderName; 14] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    header::ACCEPT_ENCODING,
];

/// A request to `uri` made on behalf of the caller of `parts`: its HTTP version, its headers
/// minus those describing its own download ([`caller_headers`]), and only the extensions named
/// with `CacheLayer::carry_extension`; an empty body. The access check's metadata request and
/// download probe, and a fill's resumed request, start from it.
pub(crate) fn on_behalf_of<B: Default>(parts: &request::Parts, uri: http::Uri) -> Request<B> {
    let mut request = Request::new(B::default());
    *request.uri_mut() = uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = caller_headers(&parts.headers);
    *request.extensions_mut() = carried(parts);
    request
}

/// Serves every cached image to every caller, without asking anyone.
///
/// Only for deployments that authorize every request before it reaches the cache (and where a
/// deleted image is evicted through the cache's own routes). Never the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustAll;

impl<S, ReqBody> AccessCheck<S, ReqBody> for TrustAll
where
    S: Service<Request<ReqBody>>,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    fn check(
        &self,
        _inner: S,
        _request: &request::Parts,
        _id: &ImageId,
    ) -> CheckFuture<S::Response, S::Error> {
        Box::pin(std::future::ready(Ok(Access::Serve(ImageMeta::default()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_the_callers_behalf_keeps_who_asks_and_drops_what_it_asked_for() {
        let mut headers = HeaderMap::new();
        headers.append("x-auth-token", "t".parse().unwrap());
        headers.append(header::RANGE, "bytes=0-9".parse().unwrap());
        headers.append("x-roles", "reader".parse().unwrap());
        headers.append("x-roles", "member".parse().unwrap());
        headers.append(header::IF_NONE_MATCH, "\"abc\"".parse().unwrap());
        headers.append(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        headers.append(header::CONNECTION, "close".parse().unwrap());
        let copy = caller_headers(&headers);
        assert_eq!(copy.len(), 3, "{copy:?}");
        assert_eq!(copy["x-auth-token"], "t");
        let roles: Vec<_> = copy.get_all("x-roles").iter().collect();
        assert_eq!(roles, ["reader", "member"], "every value, in order");
        for dropped in &DOWNLOAD_HEADERS {
            assert!(!copy.contains_key(dropped), "{dropped}");
        }
    }
}
