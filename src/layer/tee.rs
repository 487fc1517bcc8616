//! The miss that fills: a task of its own reads the wrapped service's body, writes it into the
//! cache (through the writer of `sink.rs`) and relays it to the client that asked. When the body
//! is cut, the source asks again from the byte reached (`source.rs`), and nobody reading sees
//! the cut.
//!
//! The fill does not belong to that client: when it goes away the task reads on, for the cache
//! and for the requests following the fill (see [`FillFollower`](crate::store::FillFollower)).
//! The client is kept one chunk behind, and gets the last one only once the fill is verified:
//! a body whose checksum turns out wrong ends with an error, never as a complete image. A
//! failure on the cache side (a full disk) ends the writer, never the client's download.
//!
//! A client that falls a whole channel behind does not hold back the requests following the
//! fill: the fill hands it a [`FillFollower`] at the byte it has reached, and the client reads on
//! from the growing file at its own pace.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::sink::{CacheSink, Outcome};
use super::source::Source;
use crate::body::{BoxError, RelayBody, ResponseBody};
use crate::store::{FillEnd, FillFollower, FillOutcome, FillWriter};
use crate::{ImageCache, ImageId};

/// Chunks in flight towards the client.
const CHANNEL_CHUNKS: usize = 4;

/// The body ended with more or fewer bytes than its `Content-Length`.
#[derive(Debug)]
pub(crate) struct LengthMismatch {
    expected: u64,
    received: u64,
}

impl std::fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.received < self.expected {
            write!(
                f,
                "the image body ended after {} of {} bytes",
                self.received, self.expected
            )
        } else {
            write!(
                f,
                "the image body ran past its Content-Length of {} bytes",
                self.expected
            )
        }
    }
}

impl std::error::Error for LengthMismatch {}

/// Whether a fill goes on after the client that started it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WithoutClient {
    /// Read on for the cache (the default).
    Continue,
    /// Stop, and roll back, when nobody is reading any more.
    StopWhenUnread,
}

/// Starts the fill of `source` into `writer` (a fill of `cache`); returns the body the client
/// reads. `slot` is the fill's place among the concurrent fills, held until it ends.
pub(crate) fn start<B>(
    cache: ImageCache,
    source: Source<B>,
    writer: FillWriter,
    expected_len: Option<u64>,
    without_client: WithoutClient,
    shutdown: CancellationToken,
    slot: Option<OwnedSemaphorePermit>,
) -> RelayBody
where
    B: ResponseBody,
{
    let (to_client, from_fill) = mpsc::channel(CHANNEL_CHUNKS);
    let (handoff, handed_off) = oneshot::channel();
    let client = Client {
        chunks: to_client,
        handoff,
        sent: 0,
    };
    // The fill logs inside the span of the request that started it.
    let fill = async move {
        tokio::select! {
            () = run(cache, source, writer, expected_len, without_client, client, slot) => {}
            // The service is gone: the fill stops here. Dropping `run` drops the writer's
            // channel before the body ended, so the writer rolls the fill back.
            () = shutdown.cancelled() => {}
        }
    };
    tokio::spawn(fill.instrument(tracing::Span::current()));
    RelayBody::new(from_fill, handed_off, expected_len)
}

/// The fill's side of the client that started it.
struct Client {
    chunks: mpsc::Sender<Result<Bytes, BoxError>>,
    /// Where a client that fell behind gets its follower.
    handoff: oneshot::Sender<FillFollower>,
    /// Bytes put into `chunks` so far: where a follower takes over.
    sent: u64,
}

/// The fill task: source → (cache, client).
async fn run<B>(
    cache: ImageCache,
    mut source: Source<B>,
    writer: FillWriter,
    expected_len: Option<u64>,
    without_client: WithoutClient,
    client: Client,
    slot: Option<OwnedSemaphorePermit>,
) where
    B: ResponseBody,
{
    let outcome = writer.outcome();
    let id = writer.id().clone();
    let mut sink = Some(CacheSink::start(writer, slot));
    let mut client = Some(client);
    let mut held: Option<Bytes> = None;
    let mut received = 0u64;

    let ending = loop {
        let chunk = match source.next(received).await {
            None => break None,
            Some(Err(err)) => break Some(err),
            Some(Ok(chunk)) => chunk,
        };
        received += chunk.len() as u64;
        cache
            .metrics()
            .bytes_filled(source.origin().as_str(), chunk.len() as u64);
        if let Some(expected) = expected_len.filter(|n| received > *n) {
            break Some(LengthMismatch { expected, received }.into());
        }
        if let Some(cache) = &sink {
            if cache.chunks.send(chunk.clone()).await.is_err() {
                sink = None; // the writer gave up: a cache-side failure, not the client's
            }
        }
        if let Some(previous) = held.replace(chunk) {
            let file_is_written = sink.is_some() && expected_len.is_some();
            relay_chunk(
                &mut client,
                previous,
                file_is_written,
                (&cache, &id, &outcome),
            )
            .await;
        }
        if client.is_none() && sink.is_none() {
            return; // nobody left to read for
        }
        if client.is_none()
            && without_client == WithoutClient::StopWhenUnread
            && !outcome.is_followed()
        {
            tracing::debug!(image = %id, "the client left and nobody follows: stopping the fill");
            if let Some(cache) = sink.take() {
                cache.end(Outcome::Failed("stopped: nobody was reading".into()));
            }
            return;
        }
    };
    let failure = ending.or_else(|| {
        expected_len
            .filter(|n| *n != received)
            .map(|expected| LengthMismatch { expected, received }.into())
    });
    match failure {
        Some(err) => {
            if let Some(cache) = sink.take() {
                cache.end(Outcome::Failed(format!("the upstream body failed: {err}")));
            }
            relay(&mut client, Err(err)).await;
        }
        None => {
            let verdict = match sink.take() {
                Some(cache) => {
                    cache.end(Outcome::Complete);
                    outcome.ended().await
                }
                None => FillEnd::Abandoned("the cache writer stopped".into()),
            };
            match verdict {
                FillEnd::Failed(reason) => relay(&mut client, Err(reason.into())).await,
                // Committed, verified, or a cache-side failure: the bytes are the source's.
                _ => {
                    if let Some(last) = held.take() {
                        relay(&mut client, Ok(last)).await;
                    }
                }
            }
        }
    }
}

/// Sends a chunk to the client while it is there; forgets it when it has gone.
///
/// A client a whole channel behind may set the fill's pace while it is the only reader (the
/// cache just fills at its speed). Once others follow the fill, and the file is being written,
/// it is handed a follower at the byte it has reached and forgotten: it reads on from the file
/// and holds nobody back.
async fn relay_chunk(
    client: &mut Option<Client>,
    chunk: Bytes,
    file_is_written: bool,
    fill: (&ImageCache, &ImageId, &FillOutcome),
) {
    let Some(mut to) = client.take() else { return };
    let sent = chunk.len() as u64;
    match to.chunks.try_reserve() {
        Ok(permit) => permit.send(Ok(chunk)),
        Err(mpsc::error::TrySendError::Closed(())) => return,
        Err(mpsc::error::TrySendError::Full(())) => {
            let (cache, id, outcome) = fill;
            let room = if file_is_written {
                tokio::select! {
                    room = to.chunks.reserve() => Some(room),
                    () = outcome.followed() => None,
                }
            } else {
                Some(to.chunks.reserve().await)
            };
            match room {
                Some(Ok(permit)) => permit.send(Ok(chunk)),
                Some(Err(_closed)) => return,
                None => match follower_at(cache, id, to.sent).await {
                    Some(follower) => {
                        if to.handoff.send(follower).is_err() {
                            tracing::debug!(image = %id, "the client left while falling behind");
                        }
                        return; // dropping `to.chunks` tells the body to read on from the file
                    }
                    None => {
                        if to.chunks.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    }
    to.sent += sent;
    *client = Some(to);
}

/// A follower of the fill of `id`, positioned at byte `at`.
async fn follower_at(cache: &ImageCache, id: &ImageId, at: u64) -> Option<FillFollower> {
    let following = id.clone();
    match cache.blocking(move |c| c.follow(&following)).await {
        Ok(Some(follower)) => Some(follower.starting_at(at)),
        Ok(None) => None,
        Err(err) => {
            tracing::debug!(image = %id, %err, "cannot hand a slow client over to the file");
            None
        }
    }
}

/// Sends the end of the body (an error, or the held last chunk) to the client, if it is still
/// fed by the fill, waiting for it as long as it takes.
async fn relay(client: &mut Option<Client>, item: Result<Bytes, BoxError>) {
    if let Some(to) = client {
        if to.chunks.send(item).await.is_err() {
            *client = None;
        }
    }
}
