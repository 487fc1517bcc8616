//! The store's errors: of its own operations, of a fill, and of work run on the blocking pool.

use std::fmt;
use std::io;

use super::driver::IndexError;
use super::verify::Verification;

/// Errors of the store's own operations (opening, deleting, pruning, the queue).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed: which, on which path.
    #[error("cannot {operation} {}: {source}{}", path.display(), advice(source))]
    Io {
        /// What was being done (`create the directory`, `read`, `remove`, ...).
        operation: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The index failed, or another process holds it (see [`StoreError::is_locked`]).
    #[error("{0}")]
    Index(#[from] IndexError),
    /// The configuration cannot describe a cache.
    #[error("invalid cache configuration: {0}")]
    InvalidConfig(String),
}

/// What to do about the common file errors, as a sentence's tail.
fn advice(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::PermissionDenied => {
            "; the user running the cache must own image_cache_dir and everything in it"
        }
        io::ErrorKind::StorageFull => "; free space on that disk or lower image_cache_max_size",
        io::ErrorKind::ReadOnlyFilesystem => "; the filesystem is read-only",
        _ => "",
    }
}

impl StoreError {
    /// A file operation's error, naming the operation and the path.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            operation,
            path,
            source,
        }
    }

    /// Whether another process (a running API server) holds the cache's index: the cache is in
    /// use, and maintenance goes through that server instead.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Index(err) if err.is_locked())
    }
}

/// A step of a fill's file work, for [`FillError::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FillStep {
    /// Creating `incomplete/<id>`.
    Create,
    /// Appending a chunk.
    Write,
    /// Making the file durable before the commit.
    Fsync,
    /// Moving the verified file into place.
    Rename,
    /// Making the rename durable.
    DirectoryFsync,
    /// Finishing a fill that had already ended.
    Finish,
}

impl fmt::Display for FillStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FillStep::Create => "create",
            FillStep::Write => "write",
            FillStep::Fsync => "fsync",
            FillStep::Rename => "rename",
            FillStep::DirectoryFsync => "directory fsync",
            FillStep::Finish => "finish",
        })
    }
}

/// Why a fill did not start or did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FillError {
    /// Another fill of the same image is running.
    #[error("the image is already being filled")]
    AlreadyFilling,
    /// The image is already cached.
    #[error("the image is already cached")]
    AlreadyCached,
    /// The id is a name the cache uses for itself (see [`ImageCache::is_reserved`]).
    ///
    /// [`ImageCache::is_reserved`]: super::ImageCache::is_reserved
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
    /// The image's multihash (`os_hash_algo`) uses an algorithm the cache cannot verify, so its
    /// bytes are served but not cached.
    #[error(
        "the image's os_hash_algo {0:?} is not one the cache can verify (sha512, sha384, sha256, \
         sha1, md5), so it is not cached"
    )]
    UnknownHashAlgorithm(String),
    /// The bytes were not the expected ones; the file was moved to `invalid/`.
    #[error("verification failed: {0}")]
    Verification(Verification),
    /// The image was deleted while it was being filled.
    #[error("the image was deleted while it was being filled")]
    Cancelled,
    /// A file operation failed; the partial file was removed.
    #[error("{step} failed: {source}")]
    Io {
        /// The step that failed.
        step: FillStep,
        /// The underlying error.
        source: io::Error,
    },
    /// Recording the image in the index failed; the file was removed.
    #[error("recording the image in the index failed: {0}")]
    Index(#[from] IndexError),
}

impl FillError {
    /// The metrics label of a fill that did not commit for this reason.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            FillError::Verification(_) => "verification",
            FillError::Cancelled => "cancelled",
            FillError::Index(_) => "index",
            FillError::TooLarge { .. } => "too_large",
            FillError::Io { .. } => "write",
            _ => "other",
        }
    }
}

/// Why work given to [`ImageCache::blocking`](super::ImageCache::blocking) did not return
/// its result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockingError<E> {
    /// The work ran and failed.
    #[error(transparent)]
    Failed(E),
    /// The work did not finish: it panicked, or the runtime shut down under it.
    #[error("the cache operation did not finish ({reason}); see the log for the cause")]
    Interrupted {
        /// What stopped it.
        reason: String,
    },
}
