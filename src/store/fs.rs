//! The file operations a fill performs, behind a trait so tests can make each one fail.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::ImageId;

/// The file-system steps of a fill, in the order a fill takes them.
///
/// The store calls these and nothing else to write an image, so an implementation that fails
/// one step (a full disk on `write`, a failing `rename`, ...) shows what a fill does then.
/// [`StdFillIo`] is the real thing and the default.
pub trait FillIo: Send + Sync + 'static {
    /// Creates (or truncates) the `incomplete/` file a fill writes to.
    fn create(&self, path: &Path) -> io::Result<File> {
        File::create(path)
    }

    /// Appends `buf` to the fill's file.
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }

    /// Makes the file's contents durable before it is committed.
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    /// Moves the verified file into place.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// Makes the rename durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Runs just before the commit's index `step`: the sled insert of the image's record, then
    /// the flush that makes it durable. An error fails that step as a failing index would (the
    /// real implementation has nothing to do here).
    fn index_step(&self, step: IndexStep) -> io::Result<()> {
        let _ = step;
        Ok(())
    }
}

/// The index steps of a commit, for [`FillIo::index_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexStep {
    /// The sled insert of the committed image's record.
    Insert,
    /// The sled flush that makes the record durable.
    Flush,
}

/// The real file operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFillIo;

impl FillIo for StdFillIo {}

/// Where things live under `image_cache_dir`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) base: PathBuf,
    pub(crate) incomplete: PathBuf,
    pub(crate) invalid: PathBuf,
}

impl Layout {
    pub(crate) fn new(base: &Path) -> Self {
        Layout {
            base: base.to_path_buf(),
            incomplete: base.join("incomplete"),
            invalid: base.join("invalid"),
        }
    }

    pub(crate) fn create_dirs(&self) -> io::Result<()> {
        for dir in [&self.base, &self.incomplete, &self.invalid] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub(crate) fn committed(&self, id: &ImageId) -> PathBuf {
        self.base.join(id.as_str())
    }

    pub(crate) fn incomplete(&self, id: &ImageId) -> PathBuf {
        self.incomplete.join(id.as_str())
    }

    pub(crate) fn invalid(&self, id: &ImageId) -> PathBuf {
        self.invalid.join(id.as_str())
    }
}

/// Removes a file, treating "already gone" as done.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Removes many files, treating "already gone" as done. An unlink waits on the filesystem's
/// journal more than on the CPU, so a large batch (a prune) is spread over a few threads: on
/// ext4, 50,000 unlinks take about 5 s on one thread and 2 s on four.
pub(crate) fn remove_all_present(paths: &[PathBuf]) -> io::Result<()> {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 256;
    if paths.len() < 2 * PER_THREAD {
        return paths
            .iter()
            .try_for_each(|p| remove_if_present(p).map(drop));
    }
    let threads = (paths.len() / PER_THREAD).min(THREADS);
    let share = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(share)
            .map(|part| {
                scope.spawn(move || part.iter().try_for_each(|p| remove_if_present(p).map(drop)))
            })
            .collect();
        // The scope joins every worker; the first error is the answer.
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a file removal thread panicked")))
        })
    })
}
