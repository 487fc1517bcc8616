use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, request, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::access::ManageAccess;
use super::handlers::{self, Op, Refusal};
use super::routes::Endpoint;
use crate::layer::{BoxError, CacheBody, ResponseFuture, RouteTemplate};
use crate::prefetch::{self, PrefetchHandle, WorkerSettings};
use crate::store::ImageCache;
use crate::ImageId;

/// What every clone of a [`CacheManageService`] shares.
pub(crate) struct Shared {
    pub(crate) cache: ImageCache,
    pub(crate) access: Arc<dyn ManageAccess>,
    pub(crate) metadata: RouteTemplate,
    pub(crate) identity: HeaderMap,
}

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
    fn start_worker<ReqBody, ResBody>(&self)
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqBody: Default + Send + 'static,
        ResBody: Body + Send + 'static,
        ResBody::Data: Send,
        ResBody::Error: Into<BoxError>,
    {
        if self.worker.started.load(Ordering::Relaxed) || self.worker.handle.is_shut_down() {
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

/// Policy first (as Glance does): a caller who may not manage the cache learns nothing more,
/// not even that the method or the id is wrong. Then the method, the body, and the id.
fn admit(shared: &Shared, endpoint: &Endpoint<'_>, parts: &request::Parts) -> Result<Op, Refusal> {
    if !shared.access.allows(parts) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "cache management requires an admin",
        ));
    }
    if !endpoint.allowed().contains(&parts.method) {
        return Err(Refusal::method_not_allowed(
            &parts.method,
            endpoint.allowed(),
        ));
    }
    if carries_body(&parts.headers) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "this route takes no request body",
        ));
    }
    let id = |raw: &str| match ImageId::new(raw) {
        Ok(id) if shared.cache.is_reserved(&id) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("invalid image id: {id} is a name the cache uses for its own files"),
        )),
        Ok(id) => Ok(id),
        Err(err) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("invalid image id: {err}"),
        )),
    };
    let method = &parts.method;
    Ok(match endpoint {
        Endpoint::Cache if method == Method::GET => Op::List,
        Endpoint::Cache => Op::Clear(handlers::clear_target(&parts.headers)?),
        Endpoint::CacheImage(raw) if method == Method::PUT => Op::Queue(id(raw)?),
        Endpoint::CacheImage(raw) => Op::Delete(id(raw)?),
        Endpoint::Clean => Op::Clean,
        Endpoint::Prune => Op::Prune,
        Endpoint::Prefetch => Op::Prefetch,
        Endpoint::Nodes(raw) => Op::Nodes(id(raw)?),
        Endpoint::CachedImages if method == Method::GET => Op::LegacyListCached,
        Endpoint::CachedImages => Op::LegacyDeleteAllCached,
        Endpoint::CachedImage(raw) => Op::LegacyDeleteCached(id(raw)?),
        Endpoint::QueuedImages if method == Method::GET => Op::LegacyListQueued,
        Endpoint::QueuedImages => Op::LegacyDeleteAllQueued,
        Endpoint::QueuedImage(raw) if method == Method::PUT => Op::LegacyQueue(id(raw)?),
        Endpoint::QueuedImage(raw) => Op::LegacyDeleteQueued(id(raw)?),
    })
}

fn carries_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0));
    length.unwrap_or(false) || headers.contains_key(header::TRANSFER_ENCODING)
}
