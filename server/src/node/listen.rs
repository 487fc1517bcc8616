//! Accepting connections, plain or TLS, within the node's limits: at most `max_connections`
//! served at once (beyond, each request gets `503` with `Retry-After`), a client gets
//! `client_timeout` to send a request's head (also the idle limit of a kept-alive connection)
//! and to take the next bytes of an answer. The node speaks HTTP/1.1 only: its upstream does,
//! and one slow HTTP/2 connection could otherwise hold any number of streams.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::access_log::Arrival;
use super::forwarded::{at_the_edge, TrustedProxies};
use tower_image_cache::layer::GlanceError;
use tower_image_cache::ImageCache;

/// What a client may take of the node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientLimits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// To send a request head (and between requests on a kept-alive connection), and to take
    /// the next bytes of an answer.
    pub(crate) client_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS with `acceptor`) until `stop` resolves, then stops
/// accepting and waits for the open connections to finish (the caller bounds the wait).
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    cache: ImageCache,
    trusted: TrustedProxies,
    limits: ClientLimits,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let saturated = Arc::new(AtomicBool::new(false));
    let trusted = Arc::new(trusted);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most often: give the open ones a moment to end
                    // instead of spinning on the listener.
                    tracing::warn!(%err, "could not accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let count = Counted::enter(&open);
        let over = count.open > limits.max_connections;
        if over && !saturated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = limits.max_connections,
                "at max_connections: new requests get 503 with Retry-After until connections close"
            );
        } else if !over && count.open * 10 < limits.max_connections * 9 {
            saturated.store(false, Ordering::Relaxed);
        }
        let connection = Connection {
            app: app.clone(),
            cache: cache.clone(),
            trusted: Arc::clone(&trusted),
            peer,
            tls: acceptor.is_some(),
            over,
            limits,
        };
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _count = count;
            match acceptor {
                None => connection.run(stream, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.client_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => connection.run(stream, watcher).await,
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "a TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One open connection, counted while it lives.
struct Counted {
    open: usize,
    counter: Arc<AtomicUsize>,
}

impl Counted {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        let open = counter.fetch_add(1, Ordering::AcqRel) + 1;
        Counted {
            open,
            counter: Arc::clone(counter),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Connection {
    app: Router,
    /// Whose histograms the requests' timings go to.
    cache: ImageCache,
    trusted: Arc<TrustedProxies>,
    peer: SocketAddr,
    tls: bool,
    /// Past `max_connections`: every request is answered 503 and the connection closed.
    over: bool,
    limits: ClientLimits,
}

impl Connection {
    async fn run<I>(self, io: I, watcher: hyper_util::server::graceful::Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            cache,
            trusted,
            peer,
            tls,
            over,
            limits,
        } = self;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let (app, cache) = (app.clone(), cache.clone());
            let trusted = Arc::clone(&trusted);
            async move {
                let forwarded_for = at_the_edge(request.headers_mut(), peer, tls, &trusted);
                let arrival = Arrival::new(&request, peer.ip(), forwarded_for);
                if over {
                    return Ok(arrival.answered(&cache, busy(&request)));
                }
                let response = app.oneshot(request.map(Body::new)).await;
                response.map(|response| arrival.answered(&cache, response))
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.client_timeout)
            // One chunk queued at a time per connection: a crowd of slow clients holds the
            // chunks' budget, not sixteen buffers each.
            .max_buf_size(64 * 1024)
            .keep_alive(!over);
        let io = TokioIo::new(SendTimeout::new(io, limits.client_timeout));
        let connection = builder.serve_connection(io, service);
        if let Err(err) = watcher.watch(connection).await {
            tracing::debug!(%peer, %err, "a connection ended with an error");
        }
    }
}

/// `503 Service Unavailable` with `Retry-After`: the node serves `max_connections` already.
fn busy<B>(request: &Request<B>) -> Response<Body> {
    let message = "This node is serving as many connections as it may (max_connections). \
                   Try again in a moment.";
    GlanceError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        .retry_after(1)
        .response_for::<Body>(request.headers())
        .map(Body::new)
}

/// A connection whose writes fail once the client has taken nothing for `limit`: a client that
/// stopped reading gives its connection (and the memory of the chunk waiting for it) back.
struct SendTimeout<I> {
    io: I,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> SendTimeout<I> {
    fn new(io: I, limit: Duration) -> Self {
        SendTimeout {
            io,
            limit,
            stalled: None,
        }
    }

    /// Passes on a write's progress; a write pending past the limit becomes an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took no bytes for {} s (client_timeout)",
                            limit.as_secs()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
