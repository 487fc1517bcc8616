//! What the operator binaries share: a client of the management API, Glance's table output,
//! and the "act on the directory or through the running server" rule of the cron tools.
//!
//! Internals of the binaries behind the `cli` feature, not a stable API.

mod client;
pub mod commands;
pub mod report;
mod table;
mod tool;

pub use client::{ClientError, Listing, ManageClient, Record};
pub use table::Table;
pub use tool::{run_maintenance, tool_main, Chore, ToolArgs};

/// Glance's rendering of an epoch time: ISO 8601 in UTC without a zone, `N/A` for 0.
pub fn utc_time(epoch: f64) -> String {
    if epoch <= 0.0 || !epoch.is_finite() {
        return "N/A".into();
    }
    // Rounded to the microsecond as Python's datetime.fromtimestamp does: the fraction alone,
    // half to even.
    let (seconds, fraction) = (epoch.trunc(), epoch.fract());
    let micros = seconds as u64 * 1_000_000 + (fraction * 1e6).round_ties_even() as u64;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let text = if time
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d.subsec_micros() == 0)
    {
        humantime::format_rfc3339_seconds(time).to_string()
    } else {
        humantime::format_rfc3339_micros(time).to_string()
    };
    text.trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_glance_prints_them() {
        assert_eq!(utc_time(0.0), "N/A");
        assert_eq!(utc_time(1_795_471_464.0), "2026-11-23T22:04:24");
        assert_eq!(
            utc_time(1_795_471_464.081_558),
            "2026-11-23T22:04:24.081558"
        );
    }
}
