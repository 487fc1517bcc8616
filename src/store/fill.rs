//! The fill cycle: begin → write → finish (verify, then commit or roll back).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::block_sums::BlockSummer;
use super::cache::{ImageCache, Inner};
use super::clock::now;
use super::direct::StagedFile;
use super::driver::IndexRecord;
use super::error::{FillError, FillStep};
use super::layout::remove_if_present;
use super::progress::{FillEnd, FillOutcome, FillState};
use super::record::CachedImage;
use super::verify::{Digests, Expected};
use crate::ImageId;

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
    file: Option<StagedFile>,
    expected: Expected,
    /// `None` once the fill was verified.
    digests: Option<Digests>,
    /// The CRC-32 of each block, kept with the committed file for checked reads.
    sums: BlockSummer,
    written: u64,
    /// The CPU time its digest took, once verified.
    digest_cpu: Option<std::time::Duration>,
    /// Whether the fill's end was counted in the metrics.
    counted: bool,
    started: std::time::Instant,
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

fn io_error(step: FillStep, source: io::Error) -> FillError {
    FillError::Io { step, source }
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
        if let Some(algorithm) = expected.unknown_algorithm() {
            return Err(FillError::UnknownHashAlgorithm(algorithm.to_owned()));
        }
        if self.is_cached(id) {
            return Err(FillError::AlreadyCached);
        }
        let state = Arc::new(FillState::new(expected.size, &inner.chunks));
        if !inner.fills.register(id, &state) {
            return Err(FillError::AlreadyFilling);
        }
        let path = inner.layout.incomplete(id);
        // Whatever fails from here leaves nothing behind: no registration, no file.
        let undo = |source: io::Error| {
            inner.fills.unregister(id, &state);
            let _ = remove_if_present(&path);
            io_error(FillStep::Create, source)
        };
        let file = StagedFile::new(inner.io.create(&path).map_err(undo)?);
        let digests = Digests::start(&expected).map_err(undo)?;
        inner.metrics.fill_started();
        tracing::info!(image = %id, expected_size = expected.size, "fill started");
        Ok(FillWriter {
            cache: Arc::clone(inner),
            id: id.clone(),
            state,
            file: Some(file),
            expected,
            digests: Some(digests),
            sums: BlockSummer::default(),
            written: 0,
            digest_cpu: None,
            counted: false,
            started: std::time::Instant::now(),
        })
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

    fn append(&mut self, chunk: &[u8], shared: Option<&Bytes>) -> Result<(), FillError> {
        let max_size = self.cache.config.image_cache_max_size;
        let size = self.written + chunk.len() as u64;
        if size > max_size && self.file.is_some() {
            self.count_end(Some("too_large"));
            self.discard(
                Discard::Remove,
                "the image is larger than image_cache_max_size",
            );
            return Err(FillError::TooLarge { size, max_size });
        }
        let (Some(file), Some(digests)) = (self.file.as_mut(), self.digests.as_mut()) else {
            return Err(io_error(
                FillStep::Write,
                io::Error::other("the fill already ended"),
            ));
        };
        if let Err(source) = file.append(&*self.cache.io, chunk) {
            return Err(self.write_failed(source));
        }
        digests.update(chunk, shared);
        self.sums.update(chunk);
        self.state.keep_recent(self.written, shared);
        self.written += chunk.len() as u64;
        self.state.set_received(self.written);
        self.state.set_written(file.in_file());
        Ok(())
    }

    /// Puts the bytes written so far in the file, where followers read them, but for the last
    /// partial page. The file is written a mebibyte at a time where it takes direct I/O; a fill
    /// whose source pauses calls this so that its followers are not held a block behind.
    pub fn flush(&mut self) -> Result<(), FillError> {
        self.flush_with(StagedFile::flush_pages)
    }

    /// Whether [`flush`](Self::flush) has bytes to write.
    pub fn has_unflushed(&self) -> bool {
        self.file.as_ref().is_some_and(StagedFile::has_pages)
    }

    fn flush_with(
        &mut self,
        flush: fn(&mut StagedFile, &dyn super::fs::FillIo) -> io::Result<()>,
    ) -> Result<(), FillError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if let Err(source) = flush(file, &*self.cache.io) {
            return Err(self.write_failed(source));
        }
        self.state.set_written(file.in_file());
        Ok(())
    }

    fn write_failed(&mut self, source: io::Error) -> FillError {
        self.count_end(Some("write"));
        self.discard(Discard::Remove, &format!("write failed: {source}"));
        io_error(FillStep::Write, source)
    }

    /// Gives the fill up because its source failed: the partial file goes to `invalid/`.
    pub fn abort(mut self, reason: &str) {
        self.count_end(Some("upstream"));
        self.state.end(FillEnd::Failed(reason.to_owned()));
        self.discard(Discard::Invalid, reason);
    }

    /// Verifies the bytes and commits them: fsync the file, rename it into place, fsync the
    /// directory, record it in the index and flush. On any failure nothing is committed.
    pub fn finish(mut self) -> Result<CachedImage, FillError> {
        let result = self.verify_and_commit();
        self.count_end(result.as_ref().err().map(FillError::label));
        self.state.end(match &result {
            Ok(_) => FillEnd::Committed,
            Err(err @ FillError::Verification(_)) => FillEnd::Failed(err.to_string()),
            Err(
                err @ FillError::Io {
                    step: FillStep::Finish,
                    ..
                },
            ) => FillEnd::Abandoned(err.to_string()),
            Err(_) => FillEnd::Verified,
        });
        result
    }

    /// A handle that tells how this fill ends, once it has.
    pub fn outcome(&self) -> FillOutcome {
        FillOutcome::new(&self.state)
    }

    fn verify_and_commit(&mut self) -> Result<CachedImage, FillError> {
        if self.file.is_some() {
            self.flush_with(StagedFile::flush_all)?;
        }
        let (Some(file), Some(digests)) = (self.file.take(), self.digests.take()) else {
            return Err(io_error(
                FillStep::Finish,
                io::Error::other("the fill already ended"),
            ));
        };
        let meter = digests.meter();
        let verified = digests.verify(&self.expected, self.written);
        self.digest_cpu = Some(meter.spent());
        let md5 = match verified {
            Ok(md5) => {
                // The readers have their last byte now, not after the fsync of the whole file.
                self.state.set_verified();
                md5
            }
            Err(mismatch) => {
                self.file = Some(file);
                self.discard(Discard::Invalid, &mismatch.to_string());
                return Err(FillError::Verification(mismatch));
            }
        };
        match std::mem::take(&mut self.sums).finish(self.written) {
            // Kept before the fsync, which makes them durable with the bytes.
            Some(sums) => {
                if let Err(err) = sums.store(file.file()) {
                    tracing::debug!(image = %self.id, %err, "no block sums kept: the copy will be read unchecked");
                }
            }
            None => {
                tracing::debug!(image = %self.id, "too large for block sums: the copy will be read unchecked")
            }
        }
        if let Err(source) = self.cache.io.sync_file(file.file()) {
            self.file = Some(file);
            self.discard(Discard::Remove, &format!("fsync failed: {source}"));
            return Err(io_error(FillStep::Fsync, source));
        }
        drop(file);
        self.commit(md5)
    }

    fn commit(&mut self, md5: Option<[u8; 16]>) -> Result<CachedImage, FillError> {
        let cache = Arc::clone(&self.cache);
        let layout = &cache.layout;
        let (incomplete, committed) = (layout.incomplete(&self.id), layout.committed(&self.id));
        let invalid = layout.invalid(&self.id);
        let (_commit, cancelled) = self.state.begin_commit();
        if cancelled {
            discard_path(
                &incomplete,
                &invalid,
                Discard::Remove,
                &self.id,
                "the image was deleted",
            );
            return Err(FillError::Cancelled);
        }
        if let Err(source) = cache.io.rename(&incomplete, &committed) {
            discard_path(
                &incomplete,
                &invalid,
                Discard::Remove,
                &self.id,
                "rename failed",
            );
            return Err(io_error(FillStep::Rename, source));
        }
        let unwind = |why: &str| {
            tracing::warn!(image = %self.id, why, "could not commit a cached image; removing it");
            let _ = remove_if_present(&committed);
        };
        if let Err(source) = cache.io.sync_dir(&layout.base) {
            unwind("directory fsync failed");
            return Err(io_error(FillStep::DirectoryFsync, source));
        }
        let at = now();
        let record = IndexRecord {
            size: self.written,
            hits: 0,
            last_accessed: at,
            last_modified: at,
            // Generations count from 1; 0 is left for an index that cannot count.
            generation: cache
                .catalog
                .driver()
                .next_generation()
                .map_or(0, |g| g + 1),
            md5,
        };
        let inserted = cache
            .catalog
            .insert(&self.id, record, |step| cache.io.index_step(step));
        if let Err(err) = inserted {
            let _ = cache.remove_committed([(self.id.clone(), None)]);
            unwind("index write failed");
            return Err(FillError::Index(err));
        }
        tracing::debug!(image = %self.id, size = self.written, "committed an image to the cache");
        if cache.catalog.total_size() > cache.config.image_cache_max_size {
            cache.housekeeper.request_prune();
        }
        Ok(CachedImage::new(&self.id, &record))
    }

    /// Counts how the fill ended, once (the first word stands, as for its readers).
    fn count_end(&mut self, failure: Option<&'static str>) {
        if self.counted {
            return;
        }
        self.counted = true;
        let seconds = self.started.elapsed().as_secs_f64();
        let size = self.written;
        self.cache.metrics.fill_ended(failure, seconds, size);
        let mb_per_s = (size as f64 / 1e6 / seconds.max(1e-6) * 10.0).round() / 10.0;
        let seconds = (seconds * 1000.0).round() / 1000.0;
        match failure {
            None => {
                // The digest's own rate: what bounds a fill's (`benches/compare.py` reads it).
                let digest_seconds = self
                    .digest_cpu
                    .map_or(0.0, |cpu| (cpu.as_secs_f64() * 1000.0).round() / 1000.0);
                tracing::info!(image = %self.id, size, seconds, mb_per_s, digest_seconds, "fill committed")
            }
            Some(reason) => {
                tracing::info!(image = %self.id, reason, written = size, seconds, "fill ended uncommitted")
            }
        }
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

impl Drop for FillWriter {
    fn drop(&mut self) {
        self.count_end(Some("abandoned"));
        self.discard(
            Discard::Invalid,
            "the fill was abandoned before it finished",
        );
        self.cache.fills.unregister(&self.id, &self.state);
    }
}
