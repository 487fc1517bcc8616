//! A fill's source: the wrapped service's body, read with an idle limit, and asked again with
//! `Range: bytes=N-` when it is cut, so the fill (and everyone reading it) goes on from byte N.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::{Buf, Bytes};
use http::{header, Response, StatusCode};
use http_body_util::BodyExt;

use super::fill_request::{FillResumes, FillSource};
use super::limits::{resume_backoff, within, UpstreamLimits};
use crate::body::{BoxError, ResponseBody};
use crate::image_meta::content_length;
use crate::{ImageCache, ImageId};

/// Asks the wrapped service for the image from byte `from` on (`Range: bytes=from-`, with the
/// original caller's headers); `None` when the service failed (logged by the asker).
pub(crate) type Resume<B> =
    Box<dyn FnMut(u64) -> Pin<Box<dyn Future<Output = Option<Response<B>>> + Send>> + Send>;

/// No byte of the body came for the idle limit.
#[derive(Debug)]
struct Idle(std::time::Duration);

impl fmt::Display for Idle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the upstream sent no byte of the image for {} s (upstream_idle_timeout)",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for Idle {}

/// The upstream ended the body before its `Content-Length`.
#[derive(Debug)]
struct EndedEarly {
    received: u64,
    total: u64,
}

impl fmt::Display for EndedEarly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the image body ended after {} of {} bytes",
            self.received, self.total
        )
    }
}

impl std::error::Error for EndedEarly {}

/// Where a fill's bytes come from.
pub(crate) struct Source<B> {
    body: Pin<Box<B>>,
    resume: Option<Resume<B>>,
    limits: UpstreamLimits,
    /// The image's whole length, when the first answer gave it: only then can a cut be told
    /// from an end, and a resumed answer be checked.
    total: Option<u64>,
    /// Bytes of the current body to drop: a `200` answer to a ranged request starts at byte 0.
    skip: u64,
    attempts: u32,
    cache: ImageCache,
    id: ImageId,
    /// Where the current body's bytes come from.
    origin: FillSource,
    /// The resumes so far, shared with the response to the miss.
    resumes: FillResumes,
}

impl<B: ResponseBody> Source<B> {
    pub(crate) fn new(
        body: B,
        resume: Option<Resume<B>>,
        limits: UpstreamLimits,
        total: Option<u64>,
        cache: ImageCache,
        (id, origin, resumes): (ImageId, FillSource, FillResumes),
    ) -> Self {
        Source {
            body: Box::pin(body),
            resume,
            limits,
            total,
            skip: 0,
            attempts: 0,
            cache,
            id,
            origin,
            resumes,
        }
    }

    /// Where the bytes [`next`](Self::next) gives come from now.
    pub(crate) fn origin(&self) -> FillSource {
        self.origin
    }

    /// The next bytes of the image, `received` bytes having come so far; `None` at its end.
    /// A cut (an error, an early end, an idle limit) is mended by asking again while attempts
    /// remain; the error returned is the cut that could not be.
    pub(crate) async fn next(&mut self, received: u64) -> Option<Result<Bytes, BoxError>> {
        loop {
            let frame = match within(self.limits.idle_timeout, self.body.frame()).await {
                Some(frame) => frame.map(|f| f.map_err(Into::into)),
                None => {
                    self.cache.metrics().upstream_timeout("idle");
                    let idle = Idle(self.limits.idle_timeout.unwrap_or_default());
                    tracing::warn!(image = %self.id, received, %idle, "the upstream stalled mid-image");
                    Some(Err(BoxError::from(idle)))
                }
            };
            let cut: BoxError = match frame {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    let mut chunk = data.copy_to_bytes(data.remaining());
                    if self.skip > 0 {
                        let dropped = self.skip.min(chunk.len() as u64);
                        chunk.advance(dropped as usize);
                        self.skip -= dropped;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    return Some(Ok(chunk));
                }
                Some(Err(err)) => err,
                None => match self.total.filter(|total| received < *total) {
                    Some(total) => EndedEarly { received, total }.into(),
                    None if self.skip > 0 => {
                        // A whole answer shorter than the bytes already had.
                        format!("the upstream's whole answer to a resumed request ended before byte {received}").into()
                    }
                    None => return None,
                },
            };
            if let Err(err) = self.resume_from(received, cut).await {
                return Some(Err(err));
            }
        }
    }

    /// Asks again from byte `received` after `cut`, until an answer continues the image or the
    /// attempts are spent.
    async fn resume_from(&mut self, received: u64, cut: BoxError) -> Result<(), BoxError> {
        let (Some(resume), Some(total)) = (self.resume.as_mut(), self.total) else {
            return Err(cut);
        };
        while self.attempts < self.limits.resume_attempts {
            self.attempts += 1;
            let attempt = self.attempts;
            tracing::warn!(
                image = %self.id,
                received,
                total,
                attempt,
                of = self.limits.resume_attempts,
                cause = %cut,
                "the upstream body was cut; asking again from the byte reached (Range)"
            );
            tokio::time::sleep(resume_backoff(attempt)).await;
            let response = match within(self.limits.response_timeout, resume(received)).await {
                Some(Some(response)) => response,
                Some(None) => continue,
                None => {
                    self.cache.metrics().upstream_timeout("response");
                    tracing::warn!(image = %self.id, attempt, "the resumed request got no answer in time");
                    continue;
                }
            };
            match continuation(&response, received, total) {
                Ok(Continues::Partial) => {
                    self.cache.metrics().resumed("partial");
                    self.skip = 0;
                }
                Ok(Continues::Whole) => {
                    // An upstream that ignores Range: its first `received` bytes are had.
                    self.cache.metrics().resumed("whole");
                    self.skip = received;
                }
                Err(Refused::Retry(status)) => {
                    tracing::warn!(image = %self.id, attempt, %status, "the resumed request failed upstream");
                    continue;
                }
                Err(Refused::Final(reason)) => {
                    self.cache.metrics().resumed("refused");
                    self.attempts = self.limits.resume_attempts;
                    return Err(format!("{cut}; resuming failed: {reason}").into());
                }
            }
            self.origin = FillSource::of(&response);
            self.resumes.push(received, self.origin);
            self.body = Box::pin(response.into_body());
            return Ok(());
        }
        Err(format!(
            "{cut}; the upstream did not continue it after {} ranged requests",
            self.limits.resume_attempts
        )
        .into())
    }
}

/// How an answer to `Range: bytes=received-` continues an image of `total` bytes.
enum Continues {
    /// `206` with `Content-Range: bytes received-(total-1)/total`.
    Partial,
    /// `200` with the whole image: skip what was had.
    Whole,
}

enum Refused {
    /// A server error: ask again while attempts remain.
    Retry(StatusCode),
    /// An answer that cannot continue this image (a wrong range, another length, a 4xx).
    Final(String),
}

fn continuation<B>(
    response: &Response<B>,
    received: u64,
    total: u64,
) -> Result<Continues, Refused> {
    let headers = response.headers();
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let range = headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let wanted = format!("bytes {received}-{}/{total}", total - 1);
            if range.trim() == wanted {
                Ok(Continues::Partial)
            } else {
                Err(Refused::Final(format!(
                    "the upstream answered 206 with Content-Range {range:?}, not {wanted:?}"
                )))
            }
        }
        StatusCode::OK => match content_length(headers) {
            Some(len) if len != total => Err(Refused::Final(format!(
                "the upstream's whole answer is {len} bytes, not the image's {total}"
            ))),
            _ => Ok(Continues::Whole),
        },
        status if status.is_server_error() => Err(Refused::Retry(status)),
        status => Err(Refused::Final(format!(
            "the upstream answered {status} to the ranged request"
        ))),
    }
}
