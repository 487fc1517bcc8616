//! The programs built on `tower-image-cache`: the cache node (`image-cache-server`) and Glance's
//! cache tools (`image-cache-manage`, `image-cache-pruner`, `image-cache-cleaner`,
//! `image-cache-prefetcher`).
//!
//! This library holds what the binaries share; it is not an API (the library for applications
//! is `tower-image-cache`). Operators read `docs/operators.md`.
#![deny(unsafe_code, unreachable_pub)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod causes;
pub mod cli;
pub mod node;
pub mod placement;
mod sync;

/// The command lines of the five programs, for their man pages and shell completions.
pub fn programs() -> Vec<clap::Command> {
    use clap::CommandFactory;

    let tools = [cli::Chore::Prune, cli::Chore::Clean, cli::Chore::Prefetch];
    [node::ServerArgs::command(), cli::ManageArgs::command()]
        .into_iter()
        .chain(tools.map(cli::Chore::command))
        .collect()
}
