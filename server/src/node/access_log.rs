//! The access log: one INFO line per request once its answer has been sent (or given up), with
//! who asked, what, how it was answered, how much and how fast; and the request's timings in
//! the cache's histograms.
//!
//! ```text
//! INFO tower_image_cache::access: client=10.0.0.7 forwarded_for="198.51.100.4" method=GET
//!   path=/v2/images/0b2c…/file status=200 cache_status=HIT bytes=1073741824 seconds=0.512
//!   first_byte_seconds=0.003 request_id=req-6f1e… outcome=complete
//! ```
//!
//! A miss that fills names where the fill's bytes came from: `fill_source=upstream`, `peer`
//! (another node's copy) or `follow` (another node's fill in progress); and, when its source
//! was cut and the fill went on from the byte reached, each resume as `source@byte`
//! (`resumed="upstream@1048576"`).

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};

use tower_image_cache::layer::{FillResumes, FillSource};
use tower_image_cache::ImageCache;

/// The log's target: `RUST_LOG=tower_image_cache::access=off` silences it alone.
pub(crate) const TARGET: &str = "tower_image_cache::access";

/// A request as it came in, until its answer is sent.
pub(crate) struct Arrival {
    started: Instant,
    client: IpAddr,
    /// What a trusted proxy said in `X-Forwarded-For`.
    forwarded_for: Option<String>,
    method: Method,
    path: String,
}

impl Arrival {
    /// Notes `request` from `client` (with the chain a trusted proxy forwarded, if any).
    pub(crate) fn new<B>(
        request: &Request<B>,
        client: IpAddr,
        forwarded_for: Option<String>,
    ) -> Self {
        Arrival {
            started: Instant::now(),
            client,
            forwarded_for,
            method: request.method().clone(),
            // The path only: a query may carry what is not the log's (a signed URL's key).
            path: request.uri().path().to_owned(),
        }
    }

    /// Wraps the answer's body: the line is written, and the timings recorded, when the body
    /// has been sent or given up.
    pub(crate) fn answered(self, cache: &ImageCache, response: Response<Body>) -> Response<Body> {
        let first_byte = self.started.elapsed().as_secs_f64();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // A body with nothing to send (HEAD, 204, 304) is never polled: it is complete now.
        let empty = response.body().is_end_stream() || self.method == Method::HEAD;
        // hyper stops polling a body once its Content-Length is sent.
        let length = response.body().size_hint().exact();
        let record = Record {
            arrival: self,
            status: response.status().as_u16(),
            cache_status: header("x-cache-status"),
            fill_source: response
                .extensions()
                .get::<FillSource>()
                .map(|s| s.as_str()),
            resumes: response.extensions().get::<FillResumes>().cloned(),
            request_id: header("x-openstack-request-id"),
            first_byte,
            bytes: 0,
            length,
            ended: empty.then_some("complete"),
            cache: cache.clone(),
        };
        response.map(|body| Body::new(Logged { body, record }))
    }
}

struct Record {
    arrival: Arrival,
    status: u16,
    cache_status: Option<String>,
    /// Where a fill's first bytes came from, on a miss that fills.
    fill_source: Option<&'static str>,
    /// The fill's resumes, read when the line is written.
    resumes: Option<FillResumes>,
    request_id: Option<String>,
    first_byte: f64,
    bytes: u64,
    /// The body's length, when known.
    length: Option<u64>,
    /// `complete`, or `error` when the body failed; `None` while it is being sent (a drop then
    /// means the client went away: `aborted`).
    ended: Option<&'static str>,
    cache: ImageCache,
}

impl Drop for Record {
    fn drop(&mut self) {
        let seconds = self.arrival.started.elapsed().as_secs_f64();
        self.cache
            .observe_request(self.cache_status.as_deref(), self.first_byte, seconds);
        let a = &self.arrival;
        let resumed = self
            .resumes
            .as_ref()
            .map(FillResumes::list)
            .and_then(|list| {
                let each: Vec<String> = list
                    .iter()
                    .map(|(from, source)| format!("{}@{from}", source.as_str()))
                    .collect();
                (!each.is_empty()).then(|| each.join(","))
            });
        tracing::info!(
            target: TARGET,
            client = %a.client,
            forwarded_for = a.forwarded_for.as_deref(),
            method = %a.method,
            path = %a.path,
            status = self.status,
            cache_status = self.cache_status.as_deref().unwrap_or("-"),
            fill_source = self.fill_source,
            resumed = resumed.as_deref(),
            bytes = self.bytes,
            seconds = millis(seconds),
            first_byte_seconds = millis(self.first_byte),
            request_id = self.request_id.as_deref().unwrap_or("-"),
            outcome = self.ended.unwrap_or("aborted"),
        );
    }
}

/// Seconds to the millisecond, as a number (JSON lines keep it one).
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// A response body that counts what it sends, for its [`Record`].
struct Logged {
    body: Body,
    record: Record,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes += data.len() as u64;
                    if this.record.length == Some(this.record.bytes) {
                        this.record.ended = Some("complete");
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.record.ended = Some("error"),
            Poll::Ready(None) => this.record.ended = Some("complete"),
            Poll::Pending => {}
        }
        if this.body.is_end_stream() && this.record.ended.is_none() {
            this.record.ended = Some("complete");
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
