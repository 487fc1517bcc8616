//! The fill cycle: begin → write → finish (verify, then commit or roll back).

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use md5::{Digest, Md5};
use sha2::Sha512;

use super::fs::remove_if_present;
use super::index::Entry;
use super::{lock, now, CachedImage, ImageCache, Inner};
use crate::ImageId;

/// What a fill must turn out to be. Anything left unset is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    size: Option<u64>,
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

/// Why a fill did not start or did not commit.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// Another fill of the same image is running.
    #[error("the image is already being filled")]
    AlreadyFilling,
    /// The image is already cached.
    #[error("the image is already cached")]
    AlreadyCached,
    /// The id is a name the cache uses for itself (see [`ImageCache::is_reserved`]).
    #[error("the image id names the cache's own files")]
    Reserved,
    /// The image is larger than `image_cache_max_size`.
    #[error("the image ({size} bytes) is larger than the whole cache ({max_size} bytes)")]
    TooLarge {
        /// The image's size.
        size: u64,
        /// The configured `image_cache_max_size`.
        max_size: u64,
    },
    /// The bytes were not the expected ones; the file was moved to `invalid/`.
    #[error("verification failed: {0}")]
    Verification(Verification),
    /// The image was deleted while it was being filled.
    #[error("the image was deleted while it was being filled")]
    Cancelled,
    /// A file operation failed; the partial file was removed.
    #[error("{step} failed: {source}")]
    Io {
        /// The step that failed (`create`, `write`, `fsync`, `rename`, `directory fsync`).
        step: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Recording the image in the index failed; the file was removed.
    #[error("recording the image in the index failed: {0}")]
    Index(#[from] sled::Error),
}

/// What every party to a fill can see of it.
#[derive(Debug)]
pub(crate) struct FillState {
    /// What readers following the fill see: bytes written so far, and how it ended.
    progress: watch::Sender<Progress>,
    cancelled: AtomicBool,
    /// Held across the commit's rename and index write, and by `cancel`, so a delete either
    /// stops the commit or runs after it — never between rename and index write.
    commit: Mutex<()>,
    expected_size: Option<u64>,
    /// Woken when a reader starts following the fill.
    joined: tokio::sync::Notify,
}

/// A fill's progress, as readers following it see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) written: u64,
    pub(crate) end: Option<FillEnd>,
}

/// How a fill ended, for the readers that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillEnd {
    /// Verified and committed.
    Committed,
    /// Verified, but not committed (the image was deleted meanwhile, or the commit failed): the
    /// bytes are right, the cache just does not keep them.
    Verified,
    /// The bytes are wrong or incomplete (verification failed, the source failed).
    Failed(String),
    /// The cache side gave up (a write failed): the file holds only part of the bytes.
    Abandoned(String),
}

impl FillState {
    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(crate) fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    /// Tells whoever waits in [`FillOutcome::followed`] that a reader joined.
    pub(crate) fn joined(&self) {
        self.joined.notify_waiters();
    }

    /// Records how the fill ended; the first word stands.
    fn end(&self, end: FillEnd) {
        self.progress.send_if_modified(|progress| {
            let first = progress.end.is_none();
            if first {
                progress.end = Some(end);
            }
            first
        });
    }

    pub(crate) fn cancel(&self) {
        let _commit = lock(&self.commit);
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Where a rolled-back fill's file goes.
#[derive(Debug, Clone, Copy)]
enum Discard {
    /// Kept in `invalid/` for the operator (bad bytes, an upstream that failed).
    Invalid,
    /// Deleted (a write that failed, a deleted image): nothing worth keeping, space to free.
    Remove,
}

/// A fill in progress: bytes go to `incomplete/<id>`, and [`finish`](Self::finish) verifies
/// and commits them. Dropping it without finishing rolls it back (the file goes to `invalid/`).
pub struct FillWriter {
    cache: Arc<Inner>,
    id: ImageId,
    state: Arc<FillState>,
    /// `None` once the fill failed or ended.
    file: Option<File>,
    expected: Expected,
    md5: Md5,
    /// SHA-512 runs beside the MD5, on a thread of its own: each hash takes a core, and a fill
    /// goes at the pace of the slower one instead of both in turn.
    sha512: Option<ParallelSha512>,
    written: u64,
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

impl fmt::Debug for FillWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FillWriter")
            .field("id", &self.id)
            .field("written", &self.written)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ImageCache {
    /// Starts filling `id`: creates `incomplete/<id>`. Only one fill per image runs at a time.
    pub fn begin_fill(&self, id: &ImageId, expected: Expected) -> Result<FillWriter, FillError> {
        if self.is_reserved(id) {
            return Err(FillError::Reserved);
        }
        let inner = &self.inner;
        let max_size = inner.config.image_cache_max_size;
        if let Some(size) = expected.size.filter(|size| *size > max_size) {
            return Err(FillError::TooLarge { size, max_size });
        }
        if self.is_cached(id) {
            return Err(FillError::AlreadyCached);
        }
        let state = Arc::new(FillState {
            progress: watch::Sender::new(Progress::default()),
            cancelled: AtomicBool::new(false),
            commit: Mutex::new(()),
            expected_size: expected.size,
            joined: tokio::sync::Notify::new(),
        });
        {
            let mut fills = lock(&inner.fills);
            if fills.contains_key(id) {
                return Err(FillError::AlreadyFilling);
            }
            fills.insert(id.clone(), Arc::clone(&state));
        }
        // Counted outside the fills lock: `fill_settled` reads the fills inside the watch's lock.
        inner.running_fills.send_modify(|running| *running += 1);
        let path = inner.layout.incomplete(id);
        // Whatever fails from here leaves nothing behind: no registration, no file.
        let undo = |source: io::Error| {
            unregister(inner, id, &state);
            let _ = remove_if_present(&path);
            FillError::Io {
                step: "create",
                source,
            }
        };
        let file = inner.io.create(&path).map_err(undo)?;
        let sha512 = match expected.sha512_hex {
            Some(_) => Some(ParallelSha512::start().map_err(undo)?),
            None => None,
        };
        Ok(FillWriter {
            cache: Arc::clone(inner),
            id: id.clone(),
            state,
            file: Some(file),
            expected,
            md5: Md5::new(),
            sha512,
            written: 0,
        })
    }

    /// The fills now running: id, bytes written so far, and the expected size when known.
    pub fn fills_in_progress(&self) -> Vec<(ImageId, u64, Option<u64>)> {
        let fills = lock(&self.inner.fills);
        fills
            .iter()
            .map(|(id, s)| (id.clone(), s.progress.borrow().written, s.expected_size))
            .collect()
    }
}

impl FillWriter {
    /// The image being filled.
    pub fn id(&self) -> &ImageId {
        &self.id
    }

    /// Appends `chunk`. After an error the fill is over: the partial file is removed and every
    /// later call fails.
    ///
    /// A cancelled fill (its image was deleted from the cache) writes on: the downloads reading
    /// it get their bytes, and only the commit is refused.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), FillError> {
        self.append(chunk, None)
    }

    /// [`write`](Self::write) for a chunk already in a `Bytes`, which the hashing thread then
    /// shares instead of copying.
    pub fn write_bytes(&mut self, chunk: Bytes) -> Result<(), FillError> {
        self.append(&chunk, Some(&chunk))
    }

    /// Writes `chunk`; `shared` is the same bytes when the caller holds them in a `Bytes`, so
    /// the SHA-512 thread (when there is one) gets them without a copy.
    fn append(&mut self, chunk: &[u8], shared: Option<&Bytes>) -> Result<(), FillError> {
        let max_size = self.cache.config.image_cache_max_size;
        let size = self.written + chunk.len() as u64;
        if size > max_size && self.file.is_some() {
            self.discard(
                Discard::Remove,
                "the image is larger than image_cache_max_size",
            );
            return Err(FillError::TooLarge { size, max_size });
        }
        let Some(file) = self.file.as_mut() else {
            return Err(FillError::Io {
                step: "write",
                source: io::Error::other("the fill already ended"),
            });
        };
        if let Err(source) = self.cache.io.write(file, chunk) {
            self.discard(Discard::Remove, &format!("write failed: {source}"));
            return Err(FillError::Io {
                step: "write",
                source,
            });
        }
        self.md5.update(chunk);
        self.written += chunk.len() as u64;
        if let Some(sha512) = self.sha512.as_mut() {
            sha512.update(
                shared
                    .cloned()
                    .unwrap_or_else(|| Bytes::copy_from_slice(chunk)),
            );
        }
        let written = self.written;
        self.state
            .progress
            .send_modify(|progress| progress.written = written);
        Ok(())
    }

    /// Gives the fill up because its source failed: the partial file goes to `invalid/`.
    pub fn abort(mut self, reason: &str) {
        self.state.end(FillEnd::Failed(reason.to_owned()));
        self.discard(Discard::Invalid, reason);
    }

    /// Verifies the bytes and commits them: fsync the file, rename it into place, fsync the
    /// directory, record it in sled and flush. On any failure nothing is committed.
    pub fn finish(mut self) -> Result<CachedImage, FillError> {
        let result = self.verify_and_commit();
        self.state.end(match &result {
            Ok(_) => FillEnd::Committed,
            Err(err @ FillError::Verification(_)) => FillEnd::Failed(err.to_string()),
            Err(err @ FillError::Io { step: "finish", .. }) => FillEnd::Abandoned(err.to_string()),
            Err(_) => FillEnd::Verified,
        });
        result
    }

    /// A handle that tells how this fill ends, once it has.
    pub fn outcome(&self) -> FillOutcome {
        FillOutcome {
            progress: self.state.progress(),
            state: Arc::clone(&self.state),
        }
    }

    fn verify_and_commit(&mut self) -> Result<CachedImage, FillError> {
        let Some(file) = self.file.take() else {
            return Err(FillError::Io {
                step: "finish",
                source: io::Error::other("the fill already ended"),
            });
        };
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        if let Err(mismatch) = self.verify(&md5) {
            self.file = Some(file);
            self.discard(Discard::Invalid, &mismatch.to_string());
            return Err(FillError::Verification(mismatch));
        }
        if let Err(source) = self.cache.io.sync_file(&file) {
            self.file = Some(file);
            self.discard(Discard::Remove, &format!("fsync failed: {source}"));
            return Err(FillError::Io {
                step: "fsync",
                source,
            });
        }
        drop(file);
        self.commit(md5)
    }

    fn verify(&mut self, md5: &[u8; 16]) -> Result<(), Verification> {
        if let Some(size) = self.expected.size.filter(|size| *size != self.written) {
            return Err(Verification {
                what: "size",
                expected: size.to_string(),
                actual: self.written.to_string(),
            });
        }
        let md5_hex = hex::encode(md5);
        if let Some(expected) = self.expected.md5_hex.as_ref().filter(|e| **e != md5_hex) {
            return Err(Verification {
                what: "md5",
                expected: expected.clone(),
                actual: md5_hex,
            });
        }
        if let (Some(expected), Some(sha512)) = (&self.expected.sha512_hex, self.sha512.take()) {
            let actual = sha512
                .finalize()
                .map_or_else(|| "(the hashing thread failed)".to_owned(), hex::encode);
            if *expected != actual {
                return Err(Verification {
                    what: "sha512",
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    fn commit(&mut self, md5: [u8; 16]) -> Result<CachedImage, FillError> {
        let cache = Arc::clone(&self.cache);
        let layout = &cache.layout;
        let (incomplete, committed) = (layout.incomplete(&self.id), layout.committed(&self.id));
        let _commit = lock(&self.state.commit);
        if self.state.is_cancelled() {
            discard_path(
                &incomplete,
                &layout.invalid(&self.id),
                Discard::Remove,
                &self.id,
                "the image was deleted",
            );
            return Err(FillError::Cancelled);
        }
        if let Err(source) = cache.io.rename(&incomplete, &committed) {
            discard_path(
                &incomplete,
                &layout.invalid(&self.id),
                Discard::Remove,
                &self.id,
                "rename failed",
            );
            return Err(FillError::Io {
                step: "rename",
                source,
            });
        }
        let unwind = |why: &str| {
            tracing::warn!(image = %self.id, why, "could not commit a cached image; removing it");
            let _ = remove_if_present(&committed);
        };
        if let Err(source) = cache.io.sync_dir(&layout.base) {
            unwind("directory fsync failed");
            return Err(FillError::Io {
                step: "directory fsync",
                source,
            });
        }
        let at = now();
        let entry = Entry {
            size: self.written,
            hits: 0,
            last_accessed: at,
            last_modified: at,
            // Adopted files have generation 0; commits count from 1.
            generation: cache.index.next_generation().map_or(0, |g| g + 1),
            md5: Some(md5),
        };
        if let Err(err) = cache.insert_committed(&self.id, entry) {
            let _ = cache.remove_committed([(&self.id, None)]);
            unwind("index write failed");
            return Err(FillError::Index(err));
        }
        tracing::debug!(image = %self.id, size = self.written, "committed an image to the cache");
        if cache.total_size() > cache.config.image_cache_max_size {
            cache.housekeeper.request_prune();
        }
        Ok(CachedImage::new(&self.id, &entry))
    }

    fn discard(&mut self, discard: Discard, reason: &str) {
        self.state.end(match discard {
            Discard::Remove => FillEnd::Abandoned(reason.to_owned()),
            Discard::Invalid => FillEnd::Failed(reason.to_owned()),
        });
        if self.file.take().is_some() {
            let layout = &self.cache.layout;
            discard_path(
                &layout.incomplete(&self.id),
                &layout.invalid(&self.id),
                discard,
                &self.id,
                reason,
            );
        }
    }
}

fn discard_path(incomplete: &Path, invalid: &Path, discard: Discard, id: &ImageId, reason: &str) {
    tracing::warn!(image = %id, reason, "rolling back a cache fill");
    let result = match discard {
        Discard::Invalid => std::fs::rename(incomplete, invalid)
            .or_else(|_| remove_if_present(incomplete).map(drop)),
        Discard::Remove => remove_if_present(incomplete).map(drop),
    };
    if let Err(err) = result {
        tracing::error!(image = %id, %err, "could not remove a rolled-back fill; the cleaner will");
    }
}

fn unregister(inner: &Inner, id: &ImageId, state: &Arc<FillState>) {
    let removed = {
        let mut fills = lock(&inner.fills);
        let ours = fills.get(id).is_some_and(|s| Arc::ptr_eq(s, state));
        ours && fills.remove(id).is_some()
    };
    if removed {
        inner.running_fills.send_modify(|running| *running -= 1);
    }
}

/// Tells how a fill ended; see [`FillWriter::outcome`].
#[derive(Debug, Clone)]
pub struct FillOutcome {
    progress: watch::Receiver<Progress>,
    state: Arc<FillState>,
}

impl FillOutcome {
    /// Whether any reader follows the fill (besides this handle).
    pub fn is_followed(&self) -> bool {
        self.state.progress.receiver_count() > 1
    }

    /// Resolves once a reader follows the fill (besides this handle).
    pub async fn followed(&self) {
        loop {
            let joined = self.state.joined.notified();
            if self.is_followed() {
                return;
            }
            joined.await;
        }
    }

    /// Waits for the fill to end (commit, or any kind of rollback).
    pub async fn ended(mut self) -> FillEnd {
        match self.progress.wait_for(|p| p.end.is_some()).await {
            Ok(progress) => progress.end.clone().expect("waited for it"),
            // The fill's state is gone without a word: it cannot have committed.
            Err(_) => FillEnd::Failed("the fill ended without an outcome".into()),
        }
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        self.discard(
            Discard::Invalid,
            "the fill was abandoned before it finished",
        );
        unregister(&self.cache, &self.id, &self.state);
    }
}
