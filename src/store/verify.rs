//! What a fill must turn out to be ([`Expected`]), and checking that it did ([`Verification`]).

use std::fmt;
use std::io;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;

use super::digest::HashAlgorithm;
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

/// The chunks waiting for the hashing thread, and what the writer said.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    bytes: u64,
    /// The writer finished: hash what is queued, then give the digest.
    done: bool,
    /// The fill was given up: stop.
    abandoned: bool,
    /// The thread stopped (it is done, or it failed).
    stopped: bool,
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// A digest computed on its own thread from the chunks given to it.
struct ParallelDigest {
    queue: Shared,
    digest: Option<std::thread::JoinHandle<Option<Vec<u8>>>>,
}

impl ParallelDigest {
    /// How far the digest may fall behind the writer before the writer waits for it.
    const LAG: u64 = 32 * 1024 * 1024;

    fn start(algorithm: HashAlgorithm) -> io::Result<Self> {
        let queue = Shared::default();
        let shared = Arc::clone(&queue);
        let digest = std::thread::Builder::new()
            .name(format!("image-cache-{}", algorithm.name()))
            .spawn(move || {
                // However the thread ends, a writer waiting on it is let go.
                let _stopped = Stopped(Arc::clone(&shared));
                let (queue, wake) = &*shared;
                let mut hasher = algorithm.hasher();
                loop {
                    let chunk = {
                        let mut queue = wake
                            .wait_while(lock(queue), |q| {
                                q.chunks.is_empty() && !q.done && !q.abandoned
                            })
                            .unwrap_or_else(PoisonError::into_inner);
                        if queue.abandoned {
                            return None;
                        }
                        match queue.chunks.pop_front() {
                            Some(chunk) => {
                                queue.bytes -= chunk.len() as u64;
                                chunk
                            }
                            None => return hasher.finalize(), // done, and all hashed
                        }
                    };
                    wake.notify_all();
                    hasher.update(&chunk);
                }
            })?;
        Ok(ParallelDigest {
            queue,
            digest: Some(digest),
        })
    }

    fn tell(&self, change: impl FnOnce(&mut Queue)) {
        let (queue, wake) = &*self.queue;
        change(&mut lock(queue));
        wake.notify_all();
    }

    /// Queues `chunk`; waits while the digest is more than `LAG` behind.
    fn update(&mut self, chunk: Bytes) {
        let (queue, wake) = &*self.queue;
        let mut queued = lock(queue);
        if queued.stopped {
            return; // the thread failed: `finalize` reports it
        }
        queued.bytes += chunk.len() as u64;
        queued.chunks.push_back(chunk);
        wake.notify_all();
        drop(
            wake.wait_while(queued, |q| !q.stopped && q.bytes > Self::LAG)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// The digest of every chunk given; `None` if the hashing thread failed.
    fn finalize(mut self) -> Option<Vec<u8>> {
        self.tell(|q| q.done = true);
        self.digest.take()?.join().ok().flatten()
    }
}

/// Marks the hashing thread stopped when it ends, however it ends.
struct Stopped(Shared);

impl Drop for Stopped {
    fn drop(&mut self) {
        let (queue, wake) = &*self.0;
        let mut queue = lock(queue);
        queue.stopped = true;
        queue.chunks.clear();
        queue.bytes = 0;
        wake.notify_all();
    }
}

impl Drop for ParallelDigest {
    fn drop(&mut self) {
        if self.digest.is_some() {
            // Given up: the thread stops at its next look; it is not waited for.
            self.tell(|q| {
                q.abandoned = true;
                q.chunks.clear();
            });
        }
    }
}
