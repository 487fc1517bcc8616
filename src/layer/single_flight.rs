//! One upstream read per image: the first miss for an image leads; misses for the same image
//! arriving before its fill is registered wait for the leader, then follow the fill.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::sync::lock;
use crate::ImageId;

/// The images whose first miss is on its way to the wrapped service.
#[derive(Debug, Default)]
pub(crate) struct Leaders {
    waiting: Mutex<HashMap<ImageId, watch::Receiver<()>>>,
}

/// Held by the leading miss; dropping it (fill registered, or no fill after all) releases
/// the misses waiting behind it.
#[derive(Debug)]
pub(crate) struct Lead<'a> {
    leaders: &'a Leaders,
    id: ImageId,
    _release: watch::Sender<()>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        lock(&self.leaders.waiting).remove(&self.id);
    }
}

impl Leaders {
    /// Leads the miss for `id`, or, when another request leads it, waits until that leader has
    /// registered its fill or given up; then returns `None`.
    pub(crate) async fn lead_or_wait(&self, id: &ImageId) -> Option<Lead<'_>> {
        let waiting = {
            let mut waiting = lock(&self.waiting);
            match waiting.get(id) {
                Some(release) => release.clone(),
                None => {
                    let (release, released) = watch::channel(());
                    waiting.insert(id.clone(), released);
                    return Some(Lead {
                        leaders: self,
                        id: id.clone(),
                        _release: release,
                    });
                }
            }
        };
        let mut waiting = waiting;
        // Resolves when the leader's sender is dropped.
        while waiting.changed().await.is_ok() {}
        None
    }
}
