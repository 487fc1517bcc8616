//! [`ServerOptions`]: what the cache server and the tools read beyond the cache's own options.

use std::path::Path;
use std::time::Duration;

use super::error::ConfigError;
use super::ini::{read_files, read_section, Setting};

/// The options of the cache server and the tools beyond the cache's own: where the server
/// listens (Glance's `bind_host` and `bind_port` in `[DEFAULT]`) and, in `[cache_server]`, the
/// image API it caches and its tokens.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let api = dir.path().join("glance-api.conf");
/// std::fs::write(&api, "[DEFAULT]\nbind_host = 0.0.0.0\nbind_port = 9393\n\n[cache_server]\nupstream = http://glance:9292\n")?;
/// let options = tower_image_cache::config::ServerOptions::from_files([&api])?;
/// assert_eq!(options.bind_port, Some(9393));
/// assert_eq!(options.upstream.as_deref(), Some("http://glance:9292"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// `[DEFAULT] bind_host`: the address the server listens on.
    pub bind_host: Option<String>,
    /// `[DEFAULT] bind_port`: the port the server listens on (and the tools call).
    pub bind_port: Option<u16>,
    /// `[cache_server] upstream`: the image API the server caches, e.g. `http://glance:9292`.
    pub upstream: Option<String>,
    /// `[cache_server] service_token`: the identity the prefetcher uses upstream.
    pub service_token: Option<String>,
    /// `[cache_server] manage_token`: who may call the management routes.
    pub manage_token: Option<String>,
    /// `[cache_server] shutdown_grace`: seconds a stopping server gives requests in flight.
    pub shutdown_grace: Option<Duration>,
    /// `[cache_server] metrics_bind`: a second address serving only `/metrics` and `/healthz`.
    pub metrics_bind: Option<String>,
    /// `[cache_server] manage_roles`: the Keystone roles that may manage the cache
    /// (comma-separated; `admin` when unset).
    pub manage_roles: Option<Vec<String>>,
    /// `[cache_server] upstream_keepalive`: whether connections to the upstream are reused
    /// (default true; false for upstreams that close them without saying so).
    pub upstream_keepalive: Option<bool>,
    /// `[cache_server] upstream_cafile`: a PEM file of CA certificates trusted, besides the
    /// system's, for an `https://` upstream (a private CA).
    pub upstream_cafile: Option<std::path::PathBuf>,
    /// `[cache_server] upstream_insecure`: do not verify the `https://` upstream's certificate
    /// (default false; only for tests).
    pub upstream_insecure: Option<bool>,
}

/// Glance's `bind_port` when none is set.
pub const DEFAULT_BIND_PORT: u16 = 9292;

impl ServerOptions {
    /// `bind_port`, or Glance's default ([`DEFAULT_BIND_PORT`]).
    pub fn port(&self) -> u16 {
        self.bind_port.unwrap_or(DEFAULT_BIND_PORT)
    }

    /// Reads the files in turn, a later file's value winning; unknown options are ignored.
    pub fn from_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Self, ConfigError> {
        let texts = read_files(files)?;
        let defaults = read_section(&texts, "DEFAULT")?;
        let server = read_section(&texts, "cache_server")?;
        let port = |setting: &Setting| {
            let port = setting.integer()?;
            u16::try_from(port)
                .map_err(|_| setting.bad("must be a port, 0 to 65535 (0 picks a free one)"))
        };
        let text = |key: &str| server.get(key).map(Setting::text).transpose();
        let boolean = |key: &str| server.get(key).map(Setting::boolean).transpose();
        Ok(ServerOptions {
            bind_host: defaults.get("bind_host").map(Setting::text).transpose()?,
            bind_port: defaults.get("bind_port").map(port).transpose()?,
            upstream: text("upstream")?,
            service_token: text("service_token")?,
            manage_token: text("manage_token")?,
            shutdown_grace: server
                .get("shutdown_grace")
                .map(Setting::seconds)
                .transpose()?,
            metrics_bind: text("metrics_bind")?,
            upstream_keepalive: boolean("upstream_keepalive")?,
            upstream_cafile: text("upstream_cafile")?.map(Into::into),
            upstream_insecure: boolean("upstream_insecure")?,
            manage_roles: text("manage_roles")?.map(|roles| {
                roles
                    .split(',')
                    .map(|role| role.trim().to_owned())
                    .filter(|role| !role.is_empty())
                    .collect()
            }),
        })
    }
}
