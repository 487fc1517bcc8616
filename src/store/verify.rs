//! What a fill must turn out to be ([`Expected`]), and checking that it did ([`Verification`]).

use std::fmt;
use std::io;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::digest::{HashAlgorithm, Hasher};
use crate::sync::lock;

/// What a fill must turn out to be. Anything left unset is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Expected {
    pub(crate) size: Option<u64>,
    md5_hex: Option<String>,
    /// Glance's multihash: `os_hash_algo` (lowercase) and `os_hash_value` (lowercase hex).
    os_hash: Option<(String, String)>,
}

impl Expected {
    /// The exact number of bytes.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The MD5 of the bytes, as hex (Glance's `checksum`). It is what hits send as
    /// `Content-MD5` and `ETag`; the bytes are verified with it only when no multihash
    /// ([`Expected::os_hash`]) is given.
    pub fn md5_hex(mut self, md5: impl Into<String>) -> Self {
        self.md5_hex = Some(md5.into().to_ascii_lowercase());
        self
    }

    /// Glance's multihash: the bytes' hash with `algorithm` (`os_hash_algo`: `sha512`,
    /// `sha384`, `sha256`, `sha1` or `md5`) as hex (`os_hash_value`). The fill is verified with
    /// it alone, as python-glanceclient verifies a download; an algorithm the cache does not
    /// know makes [`ImageCache::begin_fill`](super::ImageCache::begin_fill) refuse the fill.
    pub fn os_hash(mut self, algorithm: impl Into<String>, hex: impl Into<String>) -> Self {
        let algorithm = algorithm.into().trim().to_ascii_lowercase();
        self.os_hash = Some((algorithm, hex.into().trim().to_ascii_lowercase()));
        self
    }

    /// The SHA-512 of the bytes, as hex: [`Expected::os_hash`] with `sha512`.
    pub fn sha512_hex(self, sha512: impl Into<String>) -> Self {
        self.os_hash("sha512", sha512)
    }

    /// The multihash algorithm named but not known to the cache, if any.
    pub(crate) fn unknown_algorithm(&self) -> Option<&str> {
        let (algorithm, _) = self.os_hash.as_ref()?;
        HashAlgorithm::named(algorithm)
            .is_none()
            .then_some(algorithm.as_str())
    }

    /// The digest that verifies the bytes, and the hex it must give: the multihash when there is
    /// one, else the MD5 (computed even when none is expected, for the record's checksum).
    fn verifier(&self) -> (HashAlgorithm, Option<&str>) {
        if let Some((name, hex)) = &self.os_hash {
            if let Some(algorithm) = HashAlgorithm::named(name) {
                return (algorithm, Some(hex));
            }
        }
        (HashAlgorithm::Md5, self.md5_hex.as_deref())
    }
}

/// A fill whose bytes were not what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// What was checked: `size`, or the algorithm (`md5`, `sha512`, ...).
    pub what: &'static str,
    /// What was expected.
    pub expected: String,
    /// What the bytes gave.
    pub actual: String,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mismatch: expected {}, got {}",
            self.what, self.expected, self.actual
        )
    }
}

/// The one digest that verifies a fill's bytes, computed on a thread of its own from the chunks
/// as they are written (shared, not copied).
///
/// The writer and the relay to the client go on while the digest works through up to
/// [`ParallelDigest::LAG`] bytes behind them; only the verdict waits for it to catch up. The
/// bound is in bytes, not chunks: a queue of a few chunks emptied whenever its producer lost its
/// core for a scheduler slice (at 500 MB/s a slice is megabytes), and the digest, the slowest
/// stage, sat idle. Without a bound the writer ran far ahead, sharing the cores with the digest,
/// and at the end one core sat idle while the digest caught up alone.
pub(crate) struct Digests {
    algorithm: HashAlgorithm,
    digest: ParallelDigest,
}

impl Digests {
    pub(crate) fn start(expected: &Expected) -> io::Result<Self> {
        let (algorithm, _) = expected.verifier();
        Ok(Digests {
            algorithm,
            digest: ParallelDigest::start(algorithm)?,
        })
    }

    /// What the digest's threads spend: read it after [`verify`](Self::verify), which waits
    /// for them.
    pub(crate) fn meter(&self) -> DigestMeter {
        DigestMeter(Arc::clone(&self.digest.queue))
    }

    /// Adds `chunk`; `shared` is the same bytes when the caller holds them in a `Bytes`, so the
    /// hashing thread gets them without a copy.
    pub(crate) fn update(&mut self, chunk: &[u8], shared: Option<&Bytes>) {
        self.digest.update(
            shared
                .cloned()
                .unwrap_or_else(|| Bytes::copy_from_slice(chunk)),
        );
    }

    /// Checks `written` bytes against `expected`; returns the MD5 the record keeps (the image's
    /// checksum): the one computed, or the one expected when a multihash verified the bytes.
    pub(crate) fn verify(
        self,
        expected: &Expected,
        written: u64,
    ) -> Result<Option<[u8; 16]>, Verification> {
        if let Some(size) = expected.size.filter(|size| *size != written) {
            return Err(Verification {
                what: "size",
                expected: size.to_string(),
                actual: written.to_string(),
            });
        }
        let (algorithm, wanted) = expected.verifier();
        debug_assert_eq!(algorithm, self.algorithm);
        let digest = self.digest.finalize();
        let actual = digest
            .as_deref()
            .map_or_else(|| "(the hashing thread failed)".to_owned(), hex::encode);
        if digest.is_none() || wanted.is_some_and(|wanted| wanted != actual) {
            return Err(Verification {
                what: self.algorithm.name(),
                expected: wanted.unwrap_or("a digest").to_owned(),
                actual,
            });
        }
        let md5 = match self.algorithm {
            HashAlgorithm::Md5 => digest,
            _ => expected
                .md5_hex
                .as_deref()
                .and_then(|hex| hex::decode(hex).ok()),
        };
        Ok(md5.and_then(|md5| <[u8; 16]>::try_from(md5).ok()))
    }
}

/// The CPU time a fill's digest took, summed over the threads that computed it.
pub(crate) struct DigestMeter(Shared);

impl DigestMeter {
    /// The CPU time spent hashing so far.
    pub(crate) fn spent(&self) -> Duration {
        lock(&self.0 .0).cpu
    }
}

/// The running thread's CPU time.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The chunks waiting to be hashed, the digest between two drains, and what the writer said.
struct Queue {
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    bytes: u64,
    /// The running digest while no drain holds it.
    hasher: Option<Hasher>,
    /// A drain is hashing (it holds `hasher`).
    draining: bool,
    /// The fill was given up: drop what is queued, stop.
    abandoned: bool,
    /// A drain panicked: the digest is lost, and `finalize` reports it.
    failed: bool,
    /// The CPU time the drains (and `finalize`) spent hashing.
    cpu: Duration,
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// A digest computed beside the writer from the chunks given to it.
///
/// No thread is held while nothing is queued: when chunks arrive and no drain runs, one is
/// started on tokio's blocking pool (a thread of its own outside a runtime), and it returns its
/// thread as soon as the queue is empty. A fill that waits on a slow upstream or client holds
/// no thread for its digest (600 such fills once held 600).
struct ParallelDigest {
    queue: Shared,
}

impl ParallelDigest {
    /// How far the digest may fall behind the writer before the writer waits for it.
    const LAG: u64 = 32 * 1024 * 1024;

    fn start(algorithm: HashAlgorithm) -> io::Result<Self> {
        let queue = Queue {
            chunks: VecDeque::new(),
            bytes: 0,
            hasher: Some(algorithm.hasher()),
            draining: false,
            abandoned: false,
            failed: false,
            cpu: Duration::ZERO,
        };
        Ok(ParallelDigest {
            queue: Arc::new((Mutex::new(queue), Condvar::new())),
        })
    }

    /// Queues `chunk` (starting a drain if none runs); waits while the digest is more than
    /// `LAG` behind.
    fn update(&mut self, chunk: Bytes) {
        let (queue, wake) = &*self.queue;
        let mut queued = lock(queue);
        if queued.failed {
            return; // `finalize` reports it
        }
        queued.bytes += chunk.len() as u64;
        queued.chunks.push_back(chunk);
        if !queued.draining {
            queued.draining = true;
            drop(queued);
            start_drain(Arc::clone(&self.queue));
            queued = lock(queue);
        }
        drop(
            wake.wait_while(queued, |q| !q.failed && q.draining && q.bytes > Self::LAG)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// The digest of every chunk given; `None` if a drain failed.
    fn finalize(self) -> Option<Vec<u8>> {
        let (queue, wake) = &*self.queue;
        let mut queued = wake
            .wait_while(lock(queue), |q| q.draining)
            .unwrap_or_else(PoisonError::into_inner);
        if queued.failed {
            return None;
        }
        let mut hasher = queued.hasher.take()?;
        // Whatever a drain that could not start left (no thread to be had): hashed here.
        let started = thread_cpu();
        while let Some(chunk) = queued.chunks.pop_front() {
            hasher.update(&chunk);
        }
        queued.bytes = 0;
        drop(queued);
        let digest = hasher.finalize();
        lock(queue).cpu += thread_cpu().saturating_sub(started);
        digest
    }
}

/// Hashes the queue until it is empty, on a borrowed thread.
fn start_drain(shared: Shared) {
    let drained = Arc::clone(&shared);
    let drain = move || {
        let shared = drained;
        // However the drain ends, the writer waiting on it is let go.
        let _ended = DrainEnded(Arc::clone(&shared));
        let (queue, wake) = &*shared;
        let started = thread_cpu();
        let mut hasher = match lock(queue).hasher.take() {
            Some(hasher) => hasher,
            None => return,
        };
        loop {
            let chunk = {
                let mut queued = lock(queue);
                match queued.chunks.pop_front().filter(|_| !queued.abandoned) {
                    Some(chunk) => {
                        queued.bytes -= chunk.len() as u64;
                        chunk
                    }
                    None => {
                        queued.chunks.clear();
                        queued.bytes = 0;
                        queued.hasher = Some(hasher);
                        queued.draining = false;
                        queued.cpu += thread_cpu().saturating_sub(started);
                        return;
                    }
                }
            };
            wake.notify_all();
            hasher.update(&chunk);
        }
    };
    let started = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(drain);
            true
        }
        Err(_) => std::thread::Builder::new()
            .name("image-cache-digest".into())
            .spawn(drain)
            .is_ok(),
    };
    if !started {
        // No thread: `finalize` hashes what is queued.
        lock(&shared.0).draining = false;
    }
}

/// Lets a waiting writer go when a drain ends; a drain that panicked (the digest went with
/// it) fails the digest.
struct DrainEnded(Shared);

impl Drop for DrainEnded {
    fn drop(&mut self) {
        let (queue, wake) = &*self.0;
        let mut queued = lock(queue);
        if std::thread::panicking() {
            queued.draining = false;
            queued.failed = true;
        }
        wake.notify_all();
    }
}

impl Drop for ParallelDigest {
    fn drop(&mut self) {
        // Given up (or finalized): a drain still running stops at its next chunk.
        let mut queued = lock(&self.queue.0);
        queued.abandoned = true;
        queued.chunks.clear();
        queued.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest's CPU time is measured on the threads that hash, and counts every chunk:
    /// hashing 64 MiB takes tens of milliseconds of CPU on any machine, and no more than the
    /// wall time it took (one thread hashes at a time).
    #[test]
    fn the_meter_counts_the_cpu_time_of_the_hashing_threads() {
        let expected = Expected::default().sha512_hex("00");
        let mut digests = Digests::start(&expected).unwrap();
        let meter = digests.meter();
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let started = std::time::Instant::now();
        for _ in 0..64 {
            digests.update(&chunk, Some(&chunk));
        }
        let verdict = digests.verify(&expected, 64 << 20);
        let wall = started.elapsed();
        assert_eq!(verdict.unwrap_err().what, "sha512");
        let spent = meter.spent();
        assert!(spent > Duration::from_millis(10), "{spent:?} for 64 MiB");
        assert!(
            spent <= wall + Duration::from_millis(5),
            "{spent:?} of {wall:?}"
        );
    }
}
