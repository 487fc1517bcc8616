//! The image store's reads: a file streamed 1 MiB at a time, within a shared bandwidth when
//! throttled (a remote store's link).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::stream;
use tokio::io::AsyncReadExt;

/// The image store's bandwidth, shared by every read, like a remote store's link.
pub struct Throttle {
    bytes_per_second: u64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the slot in which `bytes` may pass.
    async fn pass(&self, bytes: usize) {
        let due = {
            let mut next_free = self.next_free.lock().unwrap();
            let start = (*next_free).max(Instant::now());
            *next_free =
                start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
            *next_free
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The image store's read: 1 MiB at a time, within the store's bandwidth when throttled.
pub fn read_throttled(
    file: tokio::fs::File,
    throttle: Option<Arc<Throttle>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    stream::try_unfold((file, throttle), |(mut file, throttle)| async move {
        let mut buf = vec![0u8; 1024 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(throttle) = &throttle {
            throttle.pass(n).await;
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, throttle))))
    })
}
