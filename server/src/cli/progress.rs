//! Fills in progress, as the tools show them: a bar in a terminal, plain numbers otherwise; and
//! waiting for a queued image to be cached.

use std::io::Write;
use std::time::{Duration, Instant};

use super::answers::{ClientError, InProgress};
use super::client::ManageClient;

/// How often `--wait` asks the node.
const POLL: Duration = Duration::from_millis(250);

/// One fill, on one line: `[#########...........]  45%  12.0 MiB of 26.7 MiB` for a terminal,
/// `12582912 of 28000000 bytes (45%)` otherwise.
pub fn describe(fill: &InProgress, terminal: bool) -> String {
    let written = fill.bytes_written;
    match fill.expected_size.filter(|total| *total > 0) {
        Some(total) => {
            let share = written.min(total) as f64 / total as f64;
            let percent = (share * 100.0).floor() as u32;
            if terminal {
                const WIDTH: usize = 24;
                let full = ((share * WIDTH as f64).round() as usize).min(WIDTH);
                format!(
                    "[{}{}] {percent:>3}%  {} of {}",
                    "#".repeat(full),
                    ".".repeat(WIDTH - full),
                    mib(written),
                    mib(total)
                )
            } else {
                format!("{written} of {total} bytes ({percent}%)")
            }
        }
        None => format!("{written} bytes so far (size unknown)"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// How often a line of progress is printed when standard output is not a terminal (cron, a
/// pipe), at the most; also at every tenth of the image.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// Waits until `id` is cached on `client`'s node, showing its fill's progress: redrawn in place
/// in a terminal, else as lines (every tenth of the image, or every 10 s). Fails when `timeout` passes first, or when the node no longer has the image
/// queued, filling or cached.
pub async fn wait_until_cached(
    client: &ManageClient,
    id: &str,
    timeout: Duration,
    terminal: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let node = client.node().to_owned();
    let mut shown = false;
    let mut gone_for = 0;
    // The last line printed without a terminal: when, and at which tenth.
    let mut last_line: Option<(Instant, u64)> = None;
    loop {
        let listing = client.list().await.map_err(|err: ClientError| match err {
            ClientError::Unreachable { .. } => err.to_string(),
            err => format!("host {node}: {err}"),
        })?;
        if listing.cached_images.iter().any(|r| r.image_id == id) {
            if shown && terminal {
                println!();
            }
            return Ok(());
        }
        let filling = listing.in_progress.iter().find(|f| f.image_id == id);
        match (filling, terminal) {
            (Some(fill), true) => {
                print!("\r{id} {}", describe(fill, true));
                let _ = std::io::stdout().flush();
                shown = true;
            }
            (Some(fill), false) => {
                let tenth = match fill.expected_size.filter(|t| *t > 0) {
                    Some(total) => fill.bytes_written.min(total) * 10 / total,
                    None => 0,
                };
                let due =
                    last_line.is_none_or(|(at, seen)| tenth > seen || at.elapsed() >= LINE_EVERY);
                if due {
                    println!("{id} {}", describe(fill, false));
                    last_line = Some((Instant::now(), tenth));
                }
            }
            (None, _) => {}
        }
        let queued = listing.queued_images.iter().any(|q| q == id);
        // A prefetch that ended moves the image from the queue to the cache between two looks.
        gone_for = if queued || filling.is_some() {
            0
        } else {
            gone_for + 1
        };
        if gone_for >= 3 {
            return Err(format!(
                "image {id} is no longer queued on host {node} and was not cached (deleted \
                 meanwhile?); queue it again"
            ));
        }
        if Instant::now() >= deadline {
            if shown && terminal {
                println!();
            }
            return Err(format!(
                "image {id} was not cached on host {node} within {} s; it stays queued, and the \
                 node's log says why its prefetch failed",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(written: u64, size: Option<u64>) -> InProgress {
        InProgress {
            image_id: "img".into(),
            bytes_written: written,
            expected_size: size,
        }
    }

    #[test]
    fn progress_reads_as_a_bar_or_as_numbers() {
        assert_eq!(
            describe(&fill(12_582_912, Some(25_165_824)), true),
            "[############............]  50%  12.0 MiB of 24.0 MiB"
        );
        assert_eq!(
            describe(&fill(250, Some(1000)), false),
            "250 of 1000 bytes (25%)"
        );
        assert_eq!(
            describe(&fill(7, None), false),
            "7 bytes so far (size unknown)"
        );
    }
}
