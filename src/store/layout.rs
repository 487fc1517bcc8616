//! Where things live under `image_cache_dir`, the modes they are created with, and removing
//! files there.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use crate::config::{INCOMPLETE_DIR, INVALID_DIR};
use crate::ImageId;

/// The most a file the cache writes may allow: the owner reads and writes, its group reads,
/// nobody else anything. Private images are secrets of their project, whatever the umask.
pub(crate) const FILE_MODE: u32 = 0o640;
/// The most a directory the cache makes may allow (owner all, group enter and list).
pub(crate) const DIR_MODE: u32 = 0o750;

/// Creates `path` and its missing parents with at most [`DIR_MODE`].
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates (or truncates) `path` for writing with at most [`FILE_MODE`].
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Takes from `path` and everything under it the permissions beyond [`FILE_MODE`] and
/// [`DIR_MODE`]: a cache directory an older version (or Glance) filled under a lax umask is
/// made private at open. Symbolic links are neither followed nor changed. Returns how many
/// entries were changed.
pub(crate) fn tighten_tree(path: &Path) -> io::Result<usize> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut changed = 0;
    let allowed = if meta.is_dir() {
        DIR_MODE
    } else if meta.is_file() {
        FILE_MODE
    } else {
        return Ok(0);
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !allowed != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & allowed))?;
        changed += 1;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            match tighten_tree(&entry?.path()) {
                Ok(n) => changed += n,
                // Removed meanwhile (a fill rolled back): nothing to tighten.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(changed)
}

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
            incomplete: base.join(INCOMPLETE_DIR),
            invalid: base.join(INVALID_DIR),
        }
    }

    pub(crate) fn create_dirs(&self) -> Result<(), StoreError> {
        for dir in [&self.base, &self.incomplete, &self.invalid] {
            create_private_dir(dir).map_err(StoreError::io("create the directory", dir))?;
        }
        Ok(())
    }

    /// Makes the index's directory private before its driver opens it (sled makes it with the
    /// umask's mode). Anything else there, such as Glance's SQLite file, is the driver's to
    /// judge.
    pub(crate) fn prepare_private_index(&self, db_path: &Path) -> Result<(), StoreError> {
        if std::fs::symlink_metadata(db_path).is_err() {
            create_private_dir(db_path)
                .map_err(StoreError::io("create the index directory", db_path))?;
        }
        Ok(())
    }

    /// Takes other users' permissions from everything under `image_cache_dir`, once the index
    /// is open. sled creates its files 0644 (inside its private directory): tightened quietly,
    /// so the log speaks only of files an older version or a lax umask left.
    pub(crate) fn make_private(&self, db_path: &Path) {
        if let Err(err) = tighten_tree(db_path) {
            tracing::debug!(%err, "could not tighten the index's files");
        }
        match tighten_tree(&self.base) {
            Ok(0) => {}
            Ok(changed) => tracing::info!(
                entries = changed,
                dir = %self.base.display(),
                "took the permissions of other users from files of the cache directory"
            ),
            Err(err) => tracing::warn!(
                dir = %self.base.display(),
                %err,
                "could not make every file of the cache directory private (mode 0640, \
                 directories 0750); other local users may read cached images: give the cache's \
                 user ownership of the directory"
            ),
        }
    }

    /// Removes everything in `incomplete/`: fills a process left when it stopped. Only for the
    /// one process that holds the cache (nothing else can be writing there). Returns how many
    /// entries and bytes went.
    pub(crate) fn reclaim_incomplete(&self) -> Result<(usize, u64), StoreError> {
        empty_dir(&self.incomplete)
    }

    /// Writes, syncs and removes a probe file in `incomplete/` (whose entries are never ids).
    pub(crate) fn probe_writable(&self) -> Result<(), StoreError> {
        // A name no image id can take (`+` is not an id character), so no fill collides with it.
        let probe = self
            .incomplete
            .join(format!("health+{}", std::process::id()));
        let written = create_private_file(&probe).and_then(|mut file| {
            io::Write::write_all(&mut file, b"ok")?;
            file.sync_all()
        });
        let removed = remove_if_present(&probe).map(drop);
        written
            .and(removed)
            .map_err(StoreError::io("write a probe file in", &self.incomplete))
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
pub(crate) fn remove_all_present(paths: &[PathBuf]) -> Result<(), StoreError> {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 256;
    let remove = |p: &PathBuf| {
        remove_if_present(p)
            .map(drop)
            .map_err(StoreError::io("remove", p))
    };
    if paths.len() < 2 * PER_THREAD {
        return paths.iter().try_for_each(remove);
    }
    let threads = (paths.len() / PER_THREAD).min(THREADS);
    let share = paths.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().try_for_each(remove)))
            .collect();
        // The scope joins every worker; the first error is the answer.
        workers.into_iter().try_for_each(|worker| {
            worker.join().unwrap_or_else(|_| {
                let panicked = io::Error::other("a file removal thread panicked");
                Err(StoreError::io("remove the files of", &paths[0])(panicked))
            })
        })
    })
}

/// Removes every entry of `dir` (files, and directories with what they hold); an entry gone
/// meanwhile is not an error. Returns how many entries and bytes went.
pub(crate) fn empty_dir(dir: &Path) -> Result<(usize, u64), StoreError> {
    let (mut count, mut bytes) = (0, 0);
    let entries = std::fs::read_dir(dir).map_err(StoreError::io("read the directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("read the directory", dir))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(StoreError::io("read the metadata of", &path))?;
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                count += 1;
                bytes += meta.len();
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(StoreError::io("remove", path)(err)),
        }
    }
    Ok((count, bytes))
}
