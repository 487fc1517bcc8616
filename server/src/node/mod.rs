//! The cache server (`image-cache-server`, feature `server`): the caching proxy as a product.
//!
//! Internals of the binary, not a stable API.

mod access_log;
mod claims;
mod forwarded;
mod gateway_errors;
mod listen;
mod logging;
mod notify;
mod options;
mod peer_body;
mod peer_identity;
mod peer_route;
mod peer_setup;
mod peers;
mod rot;
mod run;
mod tls;
mod upstream;
mod upstream_body;
mod upstream_tls;
mod warming;

pub use forwarded::TrustedProxies;
pub use options::{ServerArgs, ServerSettings, UpstreamTimeouts};
pub use run::main;
pub use upstream::Upstream;
