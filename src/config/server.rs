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
    /// `[DEFAULT] cert_file`: Glance's certificate (PEM) for serving HTTPS.
    pub cert_file: Option<std::path::PathBuf>,
    /// `[DEFAULT] key_file`: the private key of `cert_file` (PEM).
    pub key_file: Option<std::path::PathBuf>,
    /// `[cache_server] upstream`: the image API the server caches, e.g. `http://glance:9292`.
    pub upstream: Option<String>,
    /// `[cache_server] service_token`: the identity the prefetcher uses upstream.
    pub service_token: Option<String>,
    /// `[cache_server] manage_token`: who may call the management routes.
    pub manage_token: Option<String>,
    /// `[cache_server] peer_token`: the secret the fleet's nodes share to fill from each other
    /// (the peer route admits only it); unset, a node neither serves nor asks its peers.
    pub peer_token: Option<String>,
    /// `[cache_server] peer_roles`: Keystone roles (comma-separated) whose tokens the peer route
    /// admits besides `peer_token`; a node with a Keystone identity and this option asks its
    /// peers with its own token.
    pub peer_roles: Option<Vec<String>>,
    /// `[cache_server] peer_zone`: the site the node is in; it prefers peers of its zone, and
    /// one node per zone reads an image into the zone for the others.
    pub peer_zone: Option<String>,
    /// `[cache_server] peer_min_rate`: the least a peer's committed copy must come at, in KiB
    /// per second over [`PEER_RATE_WINDOW`]; a slower peer is left for the next source (the
    /// fill resumes from the byte reached). `0` turns the floor off.
    pub peer_min_rate: Option<u64>,
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
    /// `[cache_server] upstream_connect_timeout`: seconds to open a connection to the upstream
    /// (default 10; 0: no limit).
    pub upstream_connect_timeout: Option<Duration>,
    /// `[cache_server] upstream_response_timeout`: seconds from a request (its body sent) until
    /// the upstream's response head (default 60, nginx's `proxy_read_timeout`; 0: no limit).
    pub upstream_response_timeout: Option<Duration>,
    /// `[cache_server] upstream_idle_timeout`: seconds between two bytes of the upstream's
    /// body (default 60; 0: no limit).
    pub upstream_idle_timeout: Option<Duration>,
    /// `[cache_server] upstream_resume_attempts`: ranged requests a fill whose upstream body
    /// was cut makes before it fails (default 3; 0: none).
    pub upstream_resume_attempts: Option<u32>,
    /// `[cache_server] trusted_proxies`: addresses and CIDR blocks (comma-separated) whose
    /// `X-Forwarded-For`, `-Proto` and `-Host` are believed (a load balancer in front; default
    /// none).
    pub trusted_proxies: Option<String>,
    /// `[cache_server] max_concurrent_fills`: fills at once; a miss beyond is served through
    /// uncached (default 16).
    pub max_concurrent_fills: Option<usize>,
    /// `[cache_server] max_connections`: client connections served at once; beyond, requests
    /// get `503` with `Retry-After` (default 10,000, and at most what the open-files limit
    /// allows).
    pub max_connections: Option<usize>,
    /// `[cache_server] client_timeout`: seconds a client gets to send a request head (also the
    /// idle limit of a kept-alive connection) and to take the next bytes of an answer (default
    /// 60).
    pub client_timeout: Option<Duration>,
    /// `[cache_server] authorization_cache_time`: seconds a caller's allowed access check for
    /// one image is reused without asking the upstream (default 0: every download is checked).
    pub authorization_cache_time: Option<Duration>,
    /// `[cache_server] authorization_stale_if_error`: seconds past `authorization_cache_time` a
    /// remembered decision may still admit a hit while the upstream fails (default 0: never).
    pub authorization_stale_if_error: Option<Duration>,
}

/// The window a peer's rate is measured over for `peer_min_rate`.
pub const PEER_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// `peer_min_rate` when none is set: 1 MiB/s, in KiB/s.
pub const DEFAULT_PEER_MIN_RATE: u64 = 1024;

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
        let seconds = |key: &str| server.get(key).map(Setting::seconds).transpose();
        let count = |key: &str, max: u64| {
            server
                .get(key)
                .map(|setting| {
                    let n = setting.integer()?;
                    if n > max {
                        return Err(setting.bad(format!("must be at most {max}")));
                    }
                    Ok(n)
                })
                .transpose()
        };
        Ok(ServerOptions {
            bind_host: defaults.get("bind_host").map(Setting::text).transpose()?,
            bind_port: defaults.get("bind_port").map(port).transpose()?,
            cert_file: defaults
                .get("cert_file")
                .map(Setting::text)
                .transpose()?
                .map(Into::into),
            key_file: defaults
                .get("key_file")
                .map(Setting::text)
                .transpose()?
                .map(Into::into),
            upstream: text("upstream")?,
            service_token: text("service_token")?,
            manage_token: text("manage_token")?,
            peer_token: text("peer_token")?,
            peer_roles: text("peer_roles")?.map(|roles| list(&roles)),
            peer_zone: text("peer_zone")?,
            peer_min_rate: count("peer_min_rate", 1 << 30)?,
            shutdown_grace: server
                .get("shutdown_grace")
                .map(Setting::seconds)
                .transpose()?,
            metrics_bind: text("metrics_bind")?,
            upstream_keepalive: boolean("upstream_keepalive")?,
            upstream_cafile: text("upstream_cafile")?.map(Into::into),
            upstream_insecure: boolean("upstream_insecure")?,
            upstream_connect_timeout: seconds("upstream_connect_timeout")?,
            upstream_response_timeout: seconds("upstream_response_timeout")?,
            upstream_idle_timeout: seconds("upstream_idle_timeout")?,
            upstream_resume_attempts: count("upstream_resume_attempts", u64::from(u32::MAX))?
                .map(|n| n as u32),
            trusted_proxies: server
                .get("trusted_proxies")
                .map(|s| s.value.trim().to_owned()),
            max_concurrent_fills: count("max_concurrent_fills", 1 << 20)?.map(|n| n as usize),
            max_connections: count("max_connections", 1 << 24)?.map(|n| n as usize),
            client_timeout: seconds("client_timeout")?,
            authorization_cache_time: seconds("authorization_cache_time")?,
            authorization_stale_if_error: seconds("authorization_stale_if_error")?,
            manage_roles: text("manage_roles")?.map(|roles| list(&roles)),
        })
    }
}

/// A comma-separated list's items, trimmed, the empty ones left out.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}
