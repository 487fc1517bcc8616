//! What the operator binaries share: a client of the management API, Glance's table output,
//! and the "act on the directory or through the running server" rule of the cron tools.
//!
//! Internals of the tools, not a stable API.

mod answers;
mod client;
pub mod commands;
mod https;
pub mod identity;
mod manage_args;
pub mod progress;
pub mod report;
mod table;
mod tool;

pub use answers::{ClientError, InProgress, Listing, Record};
pub use client::{set_debug, ManageClient};
pub use identity::{Auth, OsArgs};
pub use manage_args::ManageArgs;
pub use table::{utc_time, Table};
pub use tool::{bind_port, run_maintenance, tool_main, Chore, ToolArgs};
