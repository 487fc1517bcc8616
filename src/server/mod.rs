//! The cache server (`image-cache-server`, feature `server`): the caching proxy as a product.
//!
//! Internals of the binary, not a stable API.

mod options;
mod run;
mod tls;
mod upstream;
mod upstream_tls;

pub use options::{ServerArgs, ServerSettings};
pub use run::main;
pub use upstream::Upstream;
