//! [`CacheManageService`]: answers the management routes, runs the prefetcher, passes the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::handlers;
use super::op::{admit, refusal};
use super::prefetch::{self, PrefetchHandle, WorkerSettings};
use super::response::ErrorFormat;
use super::routes::Endpoint;
use super::shared::Shared;
use crate::body::{BoxError, CacheBody, ResponseBody};
use crate::future::ResponseFuture;

/// The prefetcher of one service: started with the first request (when the request types are
/// known), stopped when the last clone of the service is dropped.
struct Worker {
    settings: WorkerSettings,
    handle: PrefetchHandle,
    started: AtomicBool,
    /// The layer's "a prefetcher runs" flag, set by this worker while it runs.
    prefetching: Arc<AtomicBool>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.handle.shutdown();
        if self.started.load(Ordering::Acquire) {
            self.prefetching.store(false, Ordering::Release);
        }
    }
}

/// The service [`CacheManageLayer`](super::CacheManageLayer) builds: answers the management
/// routes and passes everything else to `S`. Its own requests (the existence check, the
/// prefetcher's downloads) go to `A`: the wrapped service itself by default, or the one given
/// to [`api_through`](super::CacheManageLayer::api_through).
pub struct CacheManageService<S, A = S> {
    inner: S,
    api: A,
    shared: Arc<Shared>,
    worker: Arc<Worker>,
}

impl<S: Clone, A: Clone> Clone for CacheManageService<S, A> {
    fn clone(&self) -> Self {
        CacheManageService {
            inner: self.inner.clone(),
            api: self.api.clone(),
            shared: Arc::clone(&self.shared),
            worker: Arc::clone(&self.worker),
        }
    }
}

impl<S: std::fmt::Debug, A> std::fmt::Debug for CacheManageService<S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManageService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, A> CacheManageService<S, A> {
    pub(crate) fn new(
        inner: S,
        api: A,
        shared: Arc<Shared>,
        settings: WorkerSettings,
        handle: PrefetchHandle,
    ) -> Self {
        let worker = Arc::new(Worker {
            settings,
            handle,
            started: AtomicBool::new(false),
            prefetching: Arc::clone(&shared.prefetching),
        });
        CacheManageService {
            inner,
            api,
            shared,
            worker,
        }
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

    /// This service's prefetcher: wake it, or stop it.
    pub fn prefetch_handle(&self) -> PrefetchHandle {
        self.worker.handle.clone()
    }
}

impl<S, A, ReqBody, ResBody, ApiBody> Service<Request<ReqBody>> for CacheManageService<S, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    A: Service<Request<ReqBody>, Response = Response<ApiBody>, Error = S::Error>
        + Clone
        + Send
        + 'static,
    A::Future: Send + 'static,
    ReqBody: Default + Send + 'static,
    // Stated in full (not as the crate's private `ResponseBody`) so the docs show the contract.
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
    ApiBody: Body + Send + 'static,
    ApiBody::Data: Send,
    ApiBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.start_worker::<ReqBody, ApiBody>();
        if Endpoint::parse(request.uri().path()).is_none() {
            return ResponseFuture::pass_through(self.inner.call(request));
        }
        let (parts, _body) = request.into_parts();
        let decision = self.shared.access.decide(&parts);
        let format = ErrorFormat::of(&parts.headers);
        // Management answers use a clone of the API service for their own requests (the
        // existence check); the service polled ready stays for the next pass-through call.
        let api = self.api.clone();
        let (shared, wake) = (Arc::clone(&self.shared), self.worker.handle.clone());
        ResponseFuture::cache(Box::pin(async move {
            let decision = decision.await;
            if let crate::manage::Decision::Unavailable(_) = decision {
                shared.cache.metrics().keystone_failure("token_validation");
            }
            let endpoint = Endpoint::parse(parts.uri.path()).expect("parsed above");
            if let Some(refusal) = refusal(&decision, &parts.method) {
                let hidden =
                    handlers::hidden_from_caller(&shared, api, &decision, &endpoint, &parts)
                        .await?;
                let refusal =
                    hidden.unwrap_or_else(|| refusal.challenge(shared.access.challenge()));
                return Ok(refusal.into_response(format));
            }
            match admit(&shared, &endpoint, &parts) {
                Ok(op) => handlers::answer(op, &shared, api, &wake, format).await,
                Err(refusal) => Ok(refusal.into_response(format)),
            }
        }))
    }
}

impl<S, A> CacheManageService<S, A> {
    /// Starts the prefetcher now, rather than with the first request, so a queue left by the
    /// previous process is fetched at start. Call it inside a tokio runtime, naming the request
    /// body type the service takes (for axum, `axum::body::Body`):
    /// `service.start_prefetcher::<axum::body::Body, _>()`. Starting twice is harmless.
    pub fn start_prefetcher<ReqBody, ResBody>(&self)
    where
        A: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        A::Future: Send + 'static,
        A::Error: Into<BoxError>,
        ReqBody: Default + Send + 'static,
        ResBody: Body + Send + 'static,
        ResBody::Data: Send,
        ResBody::Error: Into<BoxError>,
    {
        self.start_worker::<ReqBody, ResBody>();
    }

    fn start_worker<ReqBody, ResBody>(&self)
    where
        A: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        A::Future: Send + 'static,
        A::Error: Into<BoxError>,
        ReqBody: Default + Send + 'static,
        ResBody: ResponseBody,
    {
        if self.worker.started.load(Ordering::Relaxed)
            || self.worker.handle.is_shut_down()
            || self.shared.wraps_single_routes()
        {
            // On single routes the prefetcher could not reach the image API (see the layer).
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // One prefetcher per layer, however many services it wraps.
        if self.shared.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.worker.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let run = prefetch::run(
            self.shared.cache.clone(),
            self.api.clone(),
            self.worker.settings.clone(),
            self.worker.handle.clone(),
        );
        runtime.spawn(run);
    }
}
