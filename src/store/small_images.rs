//! The bytes of small cached images, kept in memory after their first hit: a hit on one then
//! opens, reads and closes no file (those three system calls were a sixth of a 4 KiB hit's CPU).
//!
//! Each copy is kept with the commit generation it was read from, and serves only that commit:
//! a hit looks the image up in the catalog first, and a copy of another generation is never
//! handed out. A copy goes with its file (delete, prune, eviction). The copies are verified bytes (read when the file
//! on disk had the indexed size) and are bounded in total.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;

use crate::sync::{read, write};
use crate::ImageId;

/// The memory all copies may take together; past it they are all dropped and kept afresh.
const BUDGET: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct SmallImages {
    copies: RwLock<Copies>,
}

#[derive(Debug, Default)]
struct Copies {
    by_id: HashMap<ImageId, (u64, Bytes)>,
    bytes: usize,
}

impl SmallImages {
    /// The copy of `id` read from commit `generation`, if one is kept.
    pub(crate) fn get(&self, id: &ImageId, generation: u64) -> Option<Bytes> {
        let copies = read(&self.copies);
        match copies.by_id.get(id) {
            Some((kept, bytes)) if *kept == generation => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes`, the whole of commit `generation` of `id` (0, an index that cannot count
    /// commits, is never kept).
    pub(crate) fn keep(&self, id: &ImageId, generation: u64, bytes: &Bytes) {
        if generation == 0 || bytes.len() > BUDGET / 16 {
            return;
        }
        let mut copies = write(&self.copies);
        if copies.bytes + bytes.len() > BUDGET {
            copies.by_id.clear();
            copies.bytes = 0;
        }
        let replaced = copies.by_id.insert(id.clone(), (generation, bytes.clone()));
        copies.bytes += bytes.len();
        if let Some((_, old)) = replaced {
            copies.bytes -= old.len();
        }
    }

    /// Drops the copies of `ids` (their files are gone, or not what was indexed).
    pub(crate) fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a ImageId>) {
        let mut copies = write(&self.copies);
        for id in ids {
            if let Some((_, old)) = copies.by_id.remove(id) {
                copies.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_only_its_own_commit_and_the_budget_holds() {
        let small = SmallImages::default();
        let id = ImageId::new("img").unwrap();
        small.keep(&id, 3, &Bytes::from_static(b"abc"));
        assert_eq!(small.get(&id, 3).as_deref(), Some(&b"abc"[..]));
        assert_eq!(small.get(&id, 4), None, "a later commit of the same id");
        small.keep(&id, 0, &Bytes::from_static(b"x"));
        assert_eq!(small.get(&id, 0), None, "generation 0 is never kept");
        small.forget([&id]);
        assert_eq!(small.get(&id, 3), None);
        let page = Bytes::from(vec![1u8; 64 * 1024]);
        for i in 0..1000 {
            small.keep(&ImageId::new(&format!("i{i}")).unwrap(), 1, &page);
        }
        assert!(small.copies.read().unwrap().bytes <= BUDGET);
    }
}
