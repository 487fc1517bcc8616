//! [`CacheManageService`]: answers the management routes, runs the prefetcher, passes the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::handlers;
use super::op::admit;
use super::prefetch::{self, PrefetchHandle, WorkerSettings};
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
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// The service [`CacheManageLayer`](super::CacheManageLayer) builds: answers the management
/// routes and passes everything else to `S`.
pub struct CacheManageService<S> {
    inner: S,
    shared: Arc<Shared>,
    worker: Arc<Worker>,
}

impl<S: Clone> Clone for CacheManageService<S> {
    fn clone(&self) -> Self {
        CacheManageService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            worker: Arc::clone(&self.worker),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheManageService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManageService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> CacheManageService<S> {
    pub(crate) fn new(
        inner: S,
        shared: Arc<Shared>,
        settings: WorkerSettings,
        handle: PrefetchHandle,
    ) -> Self {
        let worker = Arc::new(Worker {
            settings,
            handle,
            started: AtomicBool::new(false),
        });
        CacheManageService {
            inner,
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheManageService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
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
        self.start_worker();
        if Endpoint::parse(request.uri().path()).is_none() {
            return ResponseFuture::pass_through(self.inner.call(request));
        }
        let (parts, _body) = request.into_parts();
        let endpoint = Endpoint::parse(parts.uri.path()).expect("parsed above");
        let op = match admit(&self.shared, &endpoint, &parts) {
            Ok(op) => op,
            Err(refusal) => {
                return ResponseFuture::cache(Box::pin(std::future::ready(Ok(
                    refusal.into_response()
                ))))
            }
        };
        // Management answers use a fresh clone for their own requests (the existence check);
        // the service polled ready stays for the next pass-through call.
        let inner = self.inner.clone();
        let (shared, wake) = (Arc::clone(&self.shared), self.worker.handle.clone());
        ResponseFuture::cache(Box::pin(async move {
            handlers::answer(op, &shared, inner, &wake).await
        }))
    }
}

impl<S> CacheManageService<S> {
    /// Starts the prefetcher now, rather than with the first request, so a queue left by the
    /// previous process is fetched at start. Call it inside a tokio runtime, naming the request
    /// body type the service takes (for axum, `axum::body::Body`):
    /// `service.start_prefetcher::<axum::body::Body, _>()`. Starting twice is harmless.
    pub fn start_prefetcher<ReqBody, ResBody>(&self)
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqBody: Default + Send + 'static,
        ResBody: Body + Send + 'static,
        ResBody::Data: Send,
        ResBody::Error: Into<BoxError>,
    {
        self.start_worker::<ReqBody, ResBody>();
    }

    fn start_worker<ReqBody, ResBody>(&self)
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
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
        if self.worker.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let run = prefetch::run(
            self.shared.cache.clone(),
            self.inner.clone(),
            self.worker.settings.clone(),
            self.worker.handle.clone(),
        );
        runtime.spawn(run);
    }
}
