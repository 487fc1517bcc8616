//! The file operations a fill performs, behind a trait so tests can make each one fail.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The file-system steps of a fill, in the order a fill takes them.
///
/// The store calls these and nothing else to write an image, so an implementation that fails
/// one step (a full disk on `write`, a failing `rename`, ...) shows what a fill does then.
/// [`StdFillIo`] is the real thing and the default.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub trait FillIo: Send + Sync + 'static {
    /// Creates (or truncates) the `incomplete/` file a fill writes to, readable by nobody but
    /// the owner and its group (mode 0640 at most, whatever the umask).
    fn create(&self, path: &Path) -> io::Result<File> {
        super::layout::create_private_file(path)
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

    /// Runs just before the commit's index `step`: the insert of the image's record, then the
    /// flush that makes it durable. An error fails that step as a failing index would (the
    /// real implementation has nothing to do here).
    fn index_step(&self, step: IndexStep) -> io::Result<()> {
        let _ = step;
        Ok(())
    }
}

/// The index steps of a commit, for [`FillIo::index_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub enum IndexStep {
    /// The index insert of the committed image's record.
    Insert,
    /// The index flush that makes the record durable.
    Flush,
}

/// The real file operations.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
pub struct StdFillIo;

impl FillIo for StdFillIo {}
