//! What a fill must turn out to be ([`Expected`]), and checking that it did ([`Verification`]).

use std::fmt;
use std::io;

use bytes::Bytes;

use super::digest::HashAlgorithm;

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

/// The one digest that verifies a fill's bytes as they are written, computed on a thread of its
/// own so the writer and the relay to the client do not wait for it.
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

/// A digest computed on its own thread from the chunks sent to it.
struct ParallelDigest {
    chunks: Option<std::sync::mpsc::SyncSender<Bytes>>,
    digest: Option<std::thread::JoinHandle<Option<Vec<u8>>>>,
}

impl ParallelDigest {
    /// Chunks waiting for the hashing thread: it may lag the writer by this much.
    const QUEUE: usize = 8;

    fn start(algorithm: HashAlgorithm) -> io::Result<Self> {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(Self::QUEUE);
        let digest = std::thread::Builder::new()
            .name(format!("image-cache-{}", algorithm.name()))
            .spawn(move || {
                let mut hasher = algorithm.hasher();
                for chunk in received {
                    hasher.update(&chunk);
                }
                hasher.finalize()
            })?;
        Ok(ParallelDigest {
            chunks: Some(chunks),
            digest: Some(digest),
        })
    }

    fn update(&mut self, chunk: Bytes) {
        if let Some(chunks) = &self.chunks {
            if chunks.send(chunk).is_err() {
                self.chunks = None; // the thread died: `finalize` reports it
            }
        }
    }

    /// The digest of every chunk sent; `None` if the hashing thread failed.
    fn finalize(mut self) -> Option<Vec<u8>> {
        self.chunks = None;
        self.digest.take()?.join().ok().flatten()
    }
}

impl Drop for ParallelDigest {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is not waited for.
        self.chunks = None;
    }
}
