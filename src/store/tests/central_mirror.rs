//! The `centralized_db` mirror as a decorator: over any driver (here the in-memory one), every
//! call is answered by that driver, each change reaches the central database (SQLite here), and
//! the mirror's own bookkeeping is kept in the driver it wraps.

use std::time::{Duration, Instant};

use super::*;
use crate::config::DatabaseUrl;
use crate::store::central_driver::CentralIndex;
use crate::store::driver::{IndexDriver, IndexRecord};
use crate::store::memory_driver::MemoryDriver;
use crate::store::replicator::{Replicator, EVICTION_SEEN_KEY};

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_central_mirror_decorates_any_index_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.sqlite");
    std::fs::File::create(&path).unwrap();
    let url = DatabaseUrl::parse(&format!("sqlite:///{}", path.display())).unwrap();
    let memory = MemoryDriver::default();
    let local: Arc<dyn IndexDriver> = Arc::new(memory.clone());
    let replicator =
        Arc::new(Replicator::start(&url, "http://memory:9292", local.clone()).unwrap());
    let index = CentralIndex::new(local, replicator.clone());

    let record = IndexRecord {
        size: 5,
        hits: 2,
        last_accessed: 1_700_000_100.0,
        last_modified: 1_700_000_000.0,
        generation: index.next_generation().unwrap(),
        md5: Some([7; 16]),
    };
    index.put(&id("img"), &record).unwrap();
    index.flush().unwrap();
    // Answered by the wrapped driver, whatever the database does.
    assert_eq!(memory.record(&id("img")), Some(record));
    assert_eq!(index.records().unwrap(), vec![(id("img"), record)]);

    let runtime = replicator.handle().expect("the mirror's runtime");
    let db = replicator.db().clone();
    let rows = || runtime.block_on(db.all_rows()).unwrap_or_default();
    until("the record is a row", || {
        rows()
            .iter()
            .any(|(node, row)| node == "http://memory:9292" && row.image_id == "img")
    });
    // The mirror keeps where it read the fleet's evictions in the driver it wraps.
    until("the bookkeeping is in the driver", || {
        memory.number(EVICTION_SEEN_KEY).unwrap().is_some()
    });

    index.remove_all(&[id("img")]).unwrap();
    index.flush().unwrap();
    assert_eq!(memory.record(&id("img")), None);
    until("the row is gone", || rows().is_empty());
}
