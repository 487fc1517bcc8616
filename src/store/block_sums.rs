//! The CRC-32 of each block of a committed image, kept in an extended attribute of its file
//! (`user.tower_image_cache.crc32`), so that a copy that rots on the disk after its fill was
//! verified is caught a block at a time as it is read, before a rotten block leaves the node,
//! instead of by the reader's digest after the whole image was sent.
//!
//! The sums are taken beside the writer, a mebibyte at a time, from the bytes the fill's digest
//! verifies; at the commit they are combined into at most [`MAX_SUMS`] blocks (the attribute
//! then fits in the one block ext4 gives a file's attributes) of at most [`MAX_BLOCK`] bytes.
//! A file without the attribute (a file system without user attributes, a copy adopted or
//! imported, an image over `MAX_SUMS × MAX_BLOCK`) is read unchecked, as before.
//!
//! The value: a version byte (1), the block size (u64, little-endian), then each block's
//! CRC-32 (u32, little-endian).

use std::fs::File;
use std::io;

/// The unit the writer sums.
const UNIT: u64 = 1024 * 1024;
/// The largest block the sums are combined into: what a checked read holds in memory (twice).
const MAX_BLOCK: u64 = 64 * 1024 * 1024;
/// The most sums an attribute holds: 3,849 bytes with its header.
const MAX_SUMS: usize = 960;
/// The extended attribute's name.
const ATTRIBUTE: &str = "user.tower_image_cache.crc32";
const VERSION: u8 = 1;
const HEADER: usize = 9;

/// The CRC-32 of every mebibyte written so far.
#[derive(Default)]
pub(crate) struct BlockSummer {
    units: Vec<u32>,
    current: crc32fast::Hasher,
}

impl BlockSummer {
    /// Adds the next bytes of the image.
    pub(crate) fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let room = (UNIT - self.current.total_len()) as usize;
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            self.current.update(now);
            if self.current.total_len() == UNIT {
                let full = std::mem::take(&mut self.current);
                self.units.push(full.finalize());
            }
            chunk = later;
        }
    }

    /// The sums of an image of `size` bytes (all of them written), in blocks as large as its
    /// size needs; `None` when it is too large for them.
    pub(crate) fn finish(mut self, size: u64) -> Option<BlockSums> {
        if self.current.total_len() > 0 {
            let last = std::mem::take(&mut self.current);
            self.units.push(last.finalize());
        }
        BlockSums::combined(&self.units, size)
    }
}

/// The sums of an image's blocks of `block` bytes (the last one may be shorter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockSums {
    block: u64,
    sums: Vec<u32>,
}

/// A block whose bytes are not those its fill verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rotten {
    /// The block's first byte.
    pub(crate) start: u64,
    /// Its length.
    pub(crate) len: u64,
}

impl BlockSums {
    /// Combines the sums of units (each [`UNIT`] bytes, the last one the rest of `size`) into
    /// blocks of `UNIT × 2^k` bytes, the fewest doublings that leave at most [`MAX_SUMS`].
    fn combined(units: &[u32], size: u64) -> Option<Self> {
        if units.len() as u64 != size.div_ceil(UNIT) {
            return None;
        }
        let mut per_block = 1usize;
        while units.len().div_ceil(per_block) > MAX_SUMS {
            per_block *= 2;
        }
        let block = UNIT * per_block as u64;
        if block > MAX_BLOCK {
            return None;
        }
        let unit_len = |index: usize| UNIT.min(size - index as u64 * UNIT);
        let sums = units
            .chunks(per_block)
            .enumerate()
            .map(|(b, group)| {
                let first = b * per_block;
                let mut sum = crc32fast::Hasher::new_with_initial_len(group[0], unit_len(first));
                for (offset, unit) in group.iter().enumerate().skip(1) {
                    let next =
                        crc32fast::Hasher::new_with_initial_len(*unit, unit_len(first + offset));
                    sum.combine(&next);
                }
                sum.finalize()
            })
            .collect();
        Some(BlockSums { block, sums })
    }

    /// The block size.
    pub(crate) fn block(&self) -> u64 {
        self.block
    }

    /// Checks `crc`, the CRC-32 of the `len` bytes of the block that starts at `start`.
    pub(crate) fn check(&self, start: u64, len: u64, crc: u32) -> Result<(), Rotten> {
        match self.sums.get((start / self.block) as usize) {
            Some(sum) if *sum == crc => Ok(()),
            _ => Err(Rotten { start, len }),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(HEADER + 4 * self.sums.len());
        value.push(VERSION);
        value.extend_from_slice(&self.block.to_le_bytes());
        for sum in &self.sums {
            value.extend_from_slice(&sum.to_le_bytes());
        }
        value
    }

    /// The sums an attribute's `value` holds for an image of `size` bytes; `None` when it is
    /// not one this version wrote for that size.
    fn decode(value: &[u8], size: u64) -> Option<Self> {
        let (&version, rest) = value.split_first()?;
        let (block, sums) = rest.split_first_chunk::<8>()?;
        let block = u64::from_le_bytes(*block);
        if version != VERSION || block == 0 || block % UNIT != 0 || sums.len() % 4 != 0 {
            return None;
        }
        let sums: Vec<u32> = sums
            .chunks_exact(4)
            .map(|sum| u32::from_le_bytes(sum.try_into().expect("four bytes")))
            .collect();
        (sums.len() as u64 == size.div_ceil(block)).then_some(BlockSums { block, sums })
    }

    /// Keeps the sums with `file` (before its fsync, which makes them durable with it).
    pub(crate) fn store(&self, file: &File) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::fsetxattr(file, ATTRIBUTE, &self.encode(), flags).map_err(io::Error::from)
    }

    /// The sums kept with `file`, an image of `size` bytes; `None` when it has none (or none
    /// this version can read, which is logged).
    pub(crate) fn load(file: &File, size: u64) -> Option<Self> {
        let mut value = [0u8; HEADER + 4 * MAX_SUMS];
        let len = match rustix::fs::fgetxattr(file, ATTRIBUTE, &mut value[..]) {
            Ok(len) => len,
            Err(err) if err == rustix::io::Errno::NODATA || err == rustix::io::Errno::NOTSUP => {
                return None
            }
            Err(err) => {
                tracing::warn!(%err, "the block sums of a cached image could not be read; it is read unchecked");
                return None;
            }
        };
        let sums = Self::decode(&value[..len], size);
        if sums.is_none() {
            tracing::warn!(
                size,
                "a cached image's block sums do not fit its size; it is read unchecked"
            );
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl BlockSums {
        /// Checks the bytes of the block that starts at `start`.
        fn check_bytes(&self, start: u64, bytes: &[u8]) -> Result<(), Rotten> {
            self.check(start, bytes.len() as u64, crc32fast::hash(bytes))
        }
    }

    fn summed(data: &[u8], piece: usize) -> Option<BlockSums> {
        let mut summer = BlockSummer::default();
        for chunk in data.chunks(piece) {
            summer.update(chunk);
        }
        summer.finish(data.len() as u64)
    }

    #[test]
    fn each_block_s_sum_is_the_crc_of_its_bytes_whatever_the_chunks() {
        let data: Vec<u8> = (0..(5 * UNIT + 12_345) as u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for piece in [1000, 65_536, 1 << 20, 3 << 20] {
            let sums = summed(&data, piece).unwrap();
            assert_eq!(sums.block(), UNIT);
            assert_eq!(sums.sums.len(), 6);
            for (index, block) in data.chunks(UNIT as usize).enumerate() {
                let start = index as u64 * UNIT;
                assert_eq!(sums.check_bytes(start, block), Ok(()), "block {index}");
            }
        }
    }

    #[test]
    fn large_images_get_fewer_larger_blocks_combined_from_the_units() {
        // 1,500 units of sums (a 1.5 GiB image, as its fill summed it) become 750 blocks of
        // 2 MiB, each the CRC of its bytes. Units of three contents keep the test quick.
        let size = 1500 * UNIT - 7;
        let unit_bytes = |i: usize| -> Vec<u8> {
            let len = UNIT.min(size - i as u64 * UNIT) as usize;
            vec![(i % 3) as u8 + 1; len]
        };
        let sums_of: Vec<u32> = (0..3).map(|i| crc32fast::hash(&unit_bytes(i))).collect();
        let mut units: Vec<u32> = (0..1500).map(|i| sums_of[i % 3]).collect();
        units[1499] = crc32fast::hash(&unit_bytes(1499));
        let sums = BlockSums::combined(&units, size).unwrap();
        assert_eq!((sums.block(), sums.sums.len()), (2 * UNIT, 750));
        for block in [0usize, 517, 749] {
            let bytes = [unit_bytes(2 * block), unit_bytes(2 * block + 1)].concat();
            assert_eq!(sums.check_bytes(block as u64 * 2 * UNIT, &bytes), Ok(()));
        }
        assert!(sums.encode().len() <= HEADER + 4 * MAX_SUMS);
        // Past MAX_SUMS blocks of MAX_BLOCK there are none.
        let huge = MAX_BLOCK * MAX_SUMS as u64 + 1;
        let units = vec![0; huge.div_ceil(UNIT) as usize];
        assert_eq!(BlockSums::combined(&units, huge), None);
    }

    #[test]
    fn a_changed_byte_names_its_block() {
        let mut data = vec![7u8; (3 * UNIT) as usize];
        let sums = summed(&data, 4096).unwrap();
        data[(UNIT + 10) as usize] ^= 1;
        let second = &data[UNIT as usize..(2 * UNIT) as usize];
        assert_eq!(
            sums.check_bytes(UNIT, second),
            Err(Rotten {
                start: UNIT,
                len: UNIT
            })
        );
    }

    #[test]
    fn the_attribute_round_trips_and_refuses_another_size() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("img")).unwrap();
        let data = vec![1u8; (2 * UNIT + 1) as usize];
        let sums = summed(&data, 65_536).unwrap();
        if let Err(err) = sums.store(&file) {
            println!("SKIPPED: this file system keeps no user attributes ({err})");
            return;
        }
        assert_eq!(BlockSums::load(&file, data.len() as u64), Some(sums));
        assert_eq!(BlockSums::load(&file, 5 * UNIT), None);
        let bare = File::create(dir.path().join("bare")).unwrap();
        assert_eq!(BlockSums::load(&bare, 1), None);
    }

    #[test]
    fn an_empty_image_has_no_blocks() {
        let sums = summed(&[], 1).unwrap();
        assert!(sums.sums.is_empty());
        assert_eq!(BlockSums::decode(&sums.encode(), 0), Some(sums));
    }
}
