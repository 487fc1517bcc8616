//! A fill's file written with direct I/O (`O_DIRECT`) where the file system takes it: whole
//! aligned blocks go from one reused buffer straight to the disk, without passing through the
//! page cache.
//!
//! A buffered write copies every byte into a page-cache page the kernel must first find,
//! allocate and zero, and the commit's fsync then flushes the whole image at once. Measured on
//! the 2-core benchmark machine (`dd` of 1 GiB): 1.5–4.7 s of system CPU buffered against
//! 0.2–0.3 s direct, which left the digest's core and the relay's core fighting over the
//! copy. Nginx offers the same trade (`directio`) for the same reason. The page cache still
//! fills once the image is read: the first hit reads from the disk.
//!
//! Where the file system refuses direct I/O (tmpfs, some network file systems), or refuses
//! one write of it, the file is written buffered from then on, as before.

use std::fs::File;
use std::io;

use super::fs::FillIo;

/// The alignment direct I/O asks of the buffer, the offset and the length on every Linux file
/// system (the largest logical block size in use).
const ALIGN: usize = 4096;

/// The bytes gathered before one direct write: large enough that a write's fixed cost
/// vanishes, small enough to keep a fill's memory small (`dd` wrote 1 GB/s here with 1 MiB).
const BLOCK: usize = 1024 * 1024;

/// A fill's file and, while it is written directly, the block being gathered for it.
pub(crate) struct StagedFile {
    file: File,
    /// `Some` while direct I/O is on: the buffer (a block plus room to align it) and how many
    /// bytes of the aligned block are gathered.
    staged: Option<(Vec<u8>, usize)>,
    /// The bytes in the file: what followers may read.
    in_file: u64,
}

impl StagedFile {
    /// Takes `file` (new and empty) and turns direct I/O on for it where it can.
    pub(crate) fn new(file: File) -> Self {
        let staged = set_direct(&file, true)
            .ok()
            .map(|()| (vec![0u8; BLOCK + ALIGN], 0));
        StagedFile {
            file,
            staged,
            in_file: 0,
        }
    }

    /// The bytes written to the file so far (those still gathered are not).
    pub(crate) fn in_file(&self) -> u64 {
        self.in_file
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Appends `chunk`: gathered, and written in whole blocks, when direct; written at once
    /// otherwise.
    pub(crate) fn append(&mut self, io: &dyn FillIo, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            let Some((buffer, gathered)) = self.staged.as_mut() else {
                io.write(&mut self.file, chunk)?;
                self.in_file += chunk.len() as u64;
                return Ok(());
            };
            let block = aligned(buffer);
            let take = chunk.len().min(BLOCK - *gathered);
            block[*gathered..*gathered + take].copy_from_slice(&chunk[..take]);
            *gathered += take;
            chunk = &chunk[take..];
            if *gathered == BLOCK {
                self.write_gathered(io, 1)?;
            }
        }
        Ok(())
    }

    /// Writes what is gathered: after this every byte appended is in the file. The tail of a
    /// block that is not whole pages is written buffered, and direct I/O ends: this is the
    /// file's end.
    pub(crate) fn flush_all(&mut self, io: &dyn FillIo) -> io::Result<()> {
        let unaligned = self.staged.as_ref().is_some_and(|(_, n)| *n % ALIGN != 0);
        if unaligned {
            set_direct(&self.file, false)?;
        }
        self.write_gathered(io, 1)?;
        if unaligned {
            self.staged = None;
        }
        Ok(())
    }

    /// Whether whole pages are gathered that [`flush_pages`](Self::flush_pages) would write.
    pub(crate) fn has_pages(&self) -> bool {
        self.staged.as_ref().is_some_and(|(_, n)| *n >= ALIGN)
    }

    /// Writes the whole pages gathered, directly, and keeps the rest (less than a page) for the
    /// next block: what a fill whose source pauses does for its followers.
    pub(crate) fn flush_pages(&mut self, io: &dyn FillIo) -> io::Result<()> {
        self.write_gathered(io, ALIGN)
    }

    /// Writes the gathered bytes, as many as make a multiple of `unit` (the rest moves to the
    /// block's start), directly when it can; a direct write the file system refuses is written again
    /// buffered, and direct I/O stays off.
    fn write_gathered(&mut self, io: &dyn FillIo, unit: usize) -> io::Result<()> {
        let Some((buffer, gathered)) = self.staged.as_mut() else {
            return Ok(());
        };
        let length = *gathered / unit * unit;
        if length == 0 {
            return Ok(());
        }
        let block = aligned(buffer);
        let refused = match io.write(&mut self.file, &block[..length]) {
            Ok(()) => false,
            Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                tracing::debug!(%err, "direct I/O refused; writing the fill buffered");
                set_direct(&self.file, false)?;
                io.write(&mut self.file, &block[..length])?;
                true
            }
            Err(err) => return Err(err),
        };
        block.copy_within(length..*gathered, 0);
        *gathered -= length;
        self.in_file += length as u64;
        if refused {
            // What is left (less than a page) is written buffered too.
            io.write(&mut self.file, &block[..*gathered])?;
            self.in_file += *gathered as u64;
            self.staged = None;
        }
        Ok(())
    }
}

/// The aligned block inside `buffer`.
fn aligned(buffer: &mut [u8]) -> &mut [u8] {
    let offset = buffer.as_ptr().align_offset(ALIGN);
    &mut buffer[offset..offset + BLOCK]
}

/// Turns `O_DIRECT` on or off for `file`.
pub(crate) fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file)?;
    let wanted = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    if wanted != flags {
        fcntl_setfl(file, wanted)?;
    }
    Ok(())
}
