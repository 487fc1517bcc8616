//! What a fill must turn out to be ([`Expected`]), and checking that it did ([`Verification`]).

use std::fmt;
use std::io;

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha512;

/// What a fill must turn out to be. Anything left unset is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Expected {
    pub(crate) size: Option<u64>,
    md5_hex: Option<String>,
    sha512_hex: Option<String>,
}

impl Expected {
    /// The exact number of bytes.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The MD5 of the bytes, as hex (Glance's `checksum`).
    pub fn md5_hex(mut self, md5: impl Into<String>) -> Self {
        self.md5_hex = Some(md5.into().to_ascii_lowercase());
        self
    }

    /// The SHA-512 of the bytes, as hex (Glance's `os_hash_value` with `os_hash_algo: sha512`).
    pub fn sha512_hex(mut self, sha512: impl Into<String>) -> Self {
        self.sha512_hex = Some(sha512.into().to_ascii_lowercase());
        self
    }
}

/// A fill whose bytes were not what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verification {
    /// What was checked: `size`, `md5` or `sha512`.
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

/// The digests of a fill's bytes as they are written: always the MD5 (the record's checksum),
/// and the SHA-512 when one is expected.
pub(crate) struct Digests {
    md5: Md5,
    /// SHA-512 runs beside the MD5, on a thread of its own: each hash takes a core, and a fill
    /// goes at the pace of the slower one instead of both in turn.
    sha512: Option<ParallelSha512>,
}

impl Digests {
    pub(crate) fn start(expected: &Expected) -> io::Result<Self> {
        let sha512 = match expected.sha512_hex {
            Some(_) => Some(ParallelSha512::start()?),
            None => None,
        };
        Ok(Digests {
            md5: Md5::new(),
            sha512,
        })
    }

    /// Adds `chunk`; `shared` is the same bytes when the caller holds them in a `Bytes`, so the
    /// SHA-512 thread (when there is one) gets them without a copy.
    pub(crate) fn update(&mut self, chunk: &[u8], shared: Option<&Bytes>) {
        self.md5.update(chunk);
        if let Some(sha512) = self.sha512.as_mut() {
            sha512.update(
                shared
                    .cloned()
                    .unwrap_or_else(|| Bytes::copy_from_slice(chunk)),
            );
        }
    }

    /// Checks `written` bytes with these digests against `expected`; returns the MD5.
    pub(crate) fn verify(
        self,
        expected: &Expected,
        written: u64,
    ) -> Result<[u8; 16], Verification> {
        if let Some(size) = expected.size.filter(|size| *size != written) {
            return Err(Verification {
                what: "size",
                expected: size.to_string(),
                actual: written.to_string(),
            });
        }
        let md5: [u8; 16] = self.md5.finalize().into();
        let md5_hex = hex::encode(md5);
        if let Some(wanted) = expected.md5_hex.as_ref().filter(|e| **e != md5_hex) {
            return Err(Verification {
                what: "md5",
                expected: wanted.clone(),
                actual: md5_hex,
            });
        }
        if let (Some(wanted), Some(sha512)) = (&expected.sha512_hex, self.sha512) {
            let actual = sha512
                .finalize()
                .map_or_else(|| "(the hashing thread failed)".to_owned(), hex::encode);
            if *wanted != actual {
                return Err(Verification {
                    what: "sha512",
                    expected: wanted.clone(),
                    actual,
                });
            }
        }
        Ok(md5)
    }
}

/// A SHA-512 computed on its own thread from the chunks sent to it.
struct ParallelSha512 {
    chunks: Option<std::sync::mpsc::SyncSender<Bytes>>,
    digest: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl ParallelSha512 {
    /// Chunks waiting for the hashing thread: it may lag the writer by this much.
    const QUEUE: usize = 8;

    fn start() -> io::Result<Self> {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(Self::QUEUE);
        let digest = std::thread::Builder::new()
            .name("image-cache-sha512".into())
            .spawn(move || {
                let mut sha512 = Sha512::new();
                for chunk in received {
                    sha512.update(&chunk);
                }
                sha512.finalize().to_vec()
            })?;
        Ok(ParallelSha512 {
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
        self.digest.take()?.join().ok()
    }
}

impl Drop for ParallelSha512 {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is not waited for.
        self.chunks = None;
    }
}
