//! [`CacheService`]: which requests the cache answers, and which it passes on.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;
use tracing::Instrument;

use super::access::AccessCheck;
use super::download::download;
use super::forward::{answered_then, pass, Aftermath};
use super::routes::Action;
use super::settings::{CacheStatus, Settings};
use crate::body::{BoxError, CacheBody};
use crate::future::ResponseFuture;
use crate::store::ImageCache;

/// The service [`CacheLayer`](super::CacheLayer) builds: answers image downloads from the
/// cache, fills the cache on a miss, and passes everything else to `S`.
#[derive(Debug)]
pub struct CacheService<S, A> {
    inner: S,
    settings: Arc<Settings<A>>,
}

impl<S: Clone, A> Clone for CacheService<S, A> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S, A> CacheService<S, A> {
    pub(crate) fn from_settings(inner: S, settings: Arc<Settings<A>>) -> Self {
        CacheService { inner, settings }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The cache this service fills and serves from.
    pub fn cache(&self) -> &ImageCache {
        &self.settings.cache
    }
}

impl<S, A, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    A: AccessCheck<S, ReqBody>,
    // A cut fill asks again with `Range` (an empty body): axum's `Body` is `Default`; box
    // hyper's `Incoming` (`request.map(BodyExt::boxed)`).
    ReqBody: Default + Send + 'static,
    // Stated in full (not as the crate's private `ResponseBody`) so the docs show the contract.
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let action = self
            .settings
            .routes
            .classify(request.method(), request.uri().path());
        if action == Action::PassThrough {
            return ResponseFuture::pass_through(self.inner.call(request));
        }
        // The readiness rule: the service polled ready goes into the future.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let settings = Arc::clone(&self.settings);
        // Every log line of this request, and of the fill it may start, carries this span.
        let span = match &action {
            Action::Download(id) | Action::Evict(id) | Action::Change(id) => {
                tracing::info_span!("image_request", image = %id, method = %request.method())
            }
            _ => tracing::info_span!("image_request", method = %request.method()),
        };
        let answer = async move {
            match action {
                Action::Download(id) if !settings.cache.is_reserved(&id) => {
                    download(settings, ready, id, request).await
                }
                Action::Evict(id) => {
                    answered_then(&settings, ready, request, (Aftermath::Evict, id)).await
                }
                Action::Change(id) => {
                    let aftermath = (Aftermath::VoidDecisions, id);
                    answered_then(&settings, ready, request, aftermath).await
                }
                Action::Download(_) => {
                    pass(
                        &settings,
                        ready,
                        request,
                        CacheStatus::Bypass("reserved_id"),
                    )
                    .await
                }
                Action::UnsafeDownload | Action::PassThrough => {
                    pass(&settings, ready, request, CacheStatus::Bypass("unsafe_id")).await
                }
            }
        };
        ResponseFuture::cache(Box::pin(answer.instrument(span)))
    }
}
