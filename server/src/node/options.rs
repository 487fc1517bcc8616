//! What the cache server is told: its command line, over Glance's configuration files.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::forwarded::TrustedProxies;
use tower_image_cache::config::{with_config_dirs, ServerOptions, DEFAULT_PEER_MIN_RATE};
use tower_image_cache::keystone::{AuthOptions, TlsOptions};
use tower_image_cache::store::check_zone_name;
use tower_image_cache::CacheConfig;

/// Requests in flight get this long to finish after SIGTERM or SIGINT, by default.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// To open a connection to the upstream, by default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Until the upstream's response head, and between its body's bytes, by default.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Client connections served at once, by default.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// A client's time to send a request head and to take the next bytes, by default.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The command line of `image-cache-server`.
// The field docs are its --help text: `[DEFAULT]` there names an INI section, not a doc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "image-cache-server",
    version,
    about = "A caching node in front of an image API (Glance): downloads are served from the \
             local image cache, and the cache is managed with Glance's /v2/cache API"
)]
pub struct ServerArgs {
    /// A Glance configuration file (glance-api.conf, glance-cache.conf); repeatable, later
    /// files win. /etc/glance/glance-api.conf and /etc/glance/glance-cache.conf are read first
    /// when present. The cache's options ([DEFAULT] image_cache_dir, image_cache_max_size, ...),
    /// bind_host and bind_port, and [cache_server] upstream, upstream_keepalive,
    /// upstream_cafile, upstream_insecure, service_token, manage_token, peer_token, peer_roles,
    /// peer_zone, manage_roles, shutdown_grace, metrics_bind, upstream_connect_timeout,
    /// upstream_response_timeout, upstream_idle_timeout, upstream_resume_attempts,
    /// trusted_proxies, max_concurrent_fills, max_connections, client_timeout,
    /// authorization_cache_time and authorization_stale_if_error, and the node's Keystone identity
    /// ([keystone_authtoken], or Glance's admin_user/admin_password/admin_tenant_name/auth_url)
    /// come from them.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_files: Vec<PathBuf>,
    /// A directory of *.conf files read after the --config-file files, sorted by name
    /// (oslo.config's --config-dir); repeatable.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dirs: Vec<PathBuf>,
    /// The address to listen on, over bind_host and bind_port (port 0 picks one; the address
    /// is printed as `listening on http://ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// The image API to cache, over [cache_server] upstream, e.g. http://glance:9292 or
    /// https://glance.example.com:9292.
    #[allow(rustdoc::bare_urls)] // clap's help text, where a URL is plain text
    #[arg(long, value_name = "URL")]
    pub upstream: Option<Uri>,
    /// CA certificates (PEM) trusted besides the system's for an https:// upstream, over
    /// [cache_server] upstream_cafile (a private CA).
    #[arg(long, value_name = "FILE")]
    pub upstream_cafile: Option<PathBuf>,
    /// Do not verify the https:// upstream's certificate (over [cache_server]
    /// upstream_insecure): only for tests, since anyone on the path can then read the tokens.
    #[arg(long)]
    pub upstream_insecure: bool,
    /// The cache's directory, when no configuration file names image_cache_dir.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A fixed identity (X-Auth-Token) for the prefetcher and the queue's existence check
    /// upstream, instead of the Keystone identity of the configuration files (for tests).
    #[arg(long, env = "IMAGE_CACHE_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,
    /// A fixed token that may call the management routes, instead of Keystone-checked tokens
    /// with a role of [cache_server] manage_roles (for tests). With neither, management answers
    /// 403 to all.
    #[arg(long, env = "IMAGE_CACHE_MANAGE_TOKEN", hide_env_values = true)]
    pub manage_token: Option<String>,
    /// The secret the fleet's nodes share to fill from each other, over [cache_server]
    /// peer_token: a miss is read from a node that holds the image (image_cache_driver =
    /// centralized_db) before the upstream, and the peer route serves the others.
    #[arg(long, env = "IMAGE_CACHE_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,
    /// The site this node is in, over [cache_server] peer_zone: it asks the peers of its zone
    /// first, and one node of the zone reads an image into it for the others.
    #[arg(long, value_name = "ZONE")]
    pub peer_zone: Option<String>,
    /// Seconds requests in flight get to finish after SIGTERM or SIGINT (default 10).
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// A second address serving only /metrics and /healthz (over [cache_server] metrics_bind),
    /// for a scraper and a load balancer on a private network. Both are on the main address too.
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind: Option<SocketAddr>,
    /// Serve HTTPS with this certificate chain (PEM), with --tls-key; over Glance's [DEFAULT]
    /// cert_file and key_file.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The cache's configuration.
    pub cache: CacheConfig,
    /// Where to listen.
    pub bind: SocketAddr,
    /// The image API cached.
    pub upstream: Uri,
    /// The prefetcher's identity upstream.
    pub service_token: Option<String>,
    /// The management token.
    pub manage_token: Option<String>,
    /// The fleet's peer token: fills from peers, and the peer route.
    pub peer_token: Option<String>,
    /// The Keystone roles the peer route admits (with the node's Keystone identity).
    pub peer_roles: Vec<String>,
    /// The node's zone, if any.
    pub peer_zone: Option<String>,
    /// The least bytes per second a peer's committed copy must come at (`peer_min_rate`), if
    /// any floor.
    pub peer_min_rate: Option<u64>,
    /// What requests in flight get at shutdown.
    pub shutdown_grace: Duration,
    /// The second listener for `/metrics` and `/healthz`, if any.
    pub metrics_bind: Option<SocketAddr>,
    /// The node's Keystone identity (`[DEFAULT]` admin_* or `[keystone_authtoken]`), if any: the
    /// prefetcher's identity upstream, and the one that checks management callers' tokens.
    pub keystone: Option<AuthOptions>,
    /// The Keystone roles that may manage the cache.
    pub manage_roles: Vec<String>,
    /// Whether connections to the upstream are reused.
    pub upstream_keepalive: bool,
    /// How an `https://` upstream's certificate is checked.
    pub upstream_tls: TlsOptions,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long the upstream may take (`None`: no limit).
    pub upstream_timeouts: UpstreamTimeouts,
    /// Ranged requests a cut fill makes.
    pub upstream_resume_attempts: u32,
    /// Whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Fills at once.
    pub max_concurrent_fills: usize,
    /// Client connections at once.
    pub max_connections: usize,
    /// A client's time to send a request head and to take the next bytes.
    pub client_timeout: Duration,
    /// How long an allowed access decision is reused (`None`: never).
    pub authorization_cache_time: Option<Duration>,
    /// How much longer a decision may admit a hit while the upstream fails (`None`: never).
    pub authorization_stale_if_error: Option<Duration>,
}

/// How long the upstream may take, per phase (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// To open a connection.
    pub connect: Option<Duration>,
    /// From the request (its body sent) to the response head.
    pub response: Option<Duration>,
    /// Between two bytes of the response body.
    pub idle: Option<Duration>,
}

/// A configured limit of 0 seconds means none.
fn limit(configured: Option<Duration>, default: Duration) -> Option<Duration> {
    Some(configured.unwrap_or(default)).filter(|d| !d.is_zero())
}

impl ServerArgs {
    /// The settings: the command line over the configuration files over Glance's defaults.
    /// An error is a sentence naming the option at fault and what to do.
    /// Every configuration file, in the order read: Glance's own, `--config-file`s, then the
    /// `--config-dir`s' files.
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        with_config_dirs(&self.config_files, &self.config_dirs).map_err(|err| err.to_string())
    }

    /// The settings these arguments and the configuration files they name give, the arguments
    /// winning over the files.
    pub fn resolve(&self) -> Result<ServerSettings, String> {
        let files = self.files()?;
        let options = ServerOptions::from_files(&files).map_err(|err| err.to_string())?;
        let cache = if files.is_empty() {
            let dir = self.cache_dir.clone().ok_or(
                "no cache directory: pass --cache-dir DIR, or --config-file FILE with \
                 image_cache_dir in [DEFAULT]",
            )?;
            CacheConfig::new(dir)
        } else {
            // The command line wins over the files, as with oslo.config.
            match &self.cache_dir {
                Some(dir) => CacheConfig::from_files_with_dir(&files, dir),
                None => CacheConfig::from_files(&files),
            }
            .map_err(|err| err.to_string())?
        };
        let bind = match self.bind {
            Some(bind) => bind,
            None => {
                let host = options.bind_host.as_deref().unwrap_or("0.0.0.0");
                let port = options.port();
                (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| {
                        format!("bind_host {host:?} is not an address this machine can listen on")
                    })?
            }
        };
        let upstream = match (&self.upstream, &options.upstream) {
            (Some(upstream), _) => upstream.clone(),
            (None, Some(text)) => text.parse().map_err(|err| {
                format!("[cache_server] upstream = {text:?} is not a URL ({err}): write it as http://glance:9292")
            })?,
            (None, None) => {
                return Err("no image API to cache: pass --upstream URL, or set upstream in the \
                            [cache_server] section of a --config-file"
                    .into())
            }
        };
        if upstream.authority().is_none()
            || !matches!(upstream.scheme_str(), Some("http" | "https"))
        {
            return Err(format!(
                "the upstream {upstream} must be an http:// or https:// URL with a host, e.g. \
                 http://glance:9292"
            ));
        }
        let upstream_tls = TlsOptions::new(
            self.upstream_cafile
                .clone()
                .or(options.upstream_cafile.clone()),
            self.upstream_insecure || options.upstream_insecure.unwrap_or(false),
        );
        let metrics_bind = match (self.metrics_bind, &options.metrics_bind) {
            (Some(addr), _) => Some(addr),
            (None, Some(text)) => Some(text.parse().map_err(|err| {
                format!(
                    "[cache_server] metrics_bind = {text:?} is not an address ({err}): write it \
                     as 127.0.0.1:9394"
                )
            })?),
            (None, None) => None,
        };
        let keystone = AuthOptions::from_files(&files).map_err(|err| err.to_string())?;
        let trusted_proxies = match &options.trusted_proxies {
            Some(text) => TrustedProxies::parse(text)?,
            None => TrustedProxies::default(),
        };
        Ok(ServerSettings {
            upstream_timeouts: UpstreamTimeouts {
                connect: limit(options.upstream_connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                response: limit(options.upstream_response_timeout, DEFAULT_UPSTREAM_TIMEOUT),
                idle: limit(options.upstream_idle_timeout, DEFAULT_UPSTREAM_TIMEOUT),
            },
            upstream_resume_attempts: options.upstream_resume_attempts.unwrap_or(3),
            trusted_proxies,
            max_concurrent_fills: options.max_concurrent_fills.unwrap_or(16),
            max_connections: options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            authorization_cache_time: options.authorization_cache_time.filter(|d| !d.is_zero()),
            authorization_stale_if_error: options
                .authorization_stale_if_error
                .filter(|d| !d.is_zero()),
            client_timeout: options
                .client_timeout
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_CLIENT_TIMEOUT),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                // Glance's own options, when the command line names no certificate.
                _ => match (&options.cert_file, &options.key_file) {
                    (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                    (None, None) => None,
                    _ => {
                        return Err("[DEFAULT] cert_file and key_file go together: set both to \
                                    serve HTTPS, or neither"
                            .into())
                    }
                },
            },
            keystone,
            upstream_keepalive: options.upstream_keepalive.unwrap_or(true),
            upstream_tls,
            manage_roles: options
                .manage_roles
                .clone()
                .unwrap_or_else(|| vec!["admin".to_owned()]),
            metrics_bind,
            cache,
            bind,
            upstream,
            service_token: self.service_token.clone().or(options.service_token),
            manage_token: self.manage_token.clone().or(options.manage_token),
            peer_token: self.peer_token.clone().or(options.peer_token),
            peer_roles: options.peer_roles.unwrap_or_default(),
            peer_zone: match self.peer_zone.clone().or(options.peer_zone) {
                Some(zone) => Some(check_zone_name(&zone).map(|()| zone)?),
                None => None,
            },
            peer_min_rate: match options.peer_min_rate.unwrap_or(DEFAULT_PEER_MIN_RATE) {
                0 => None,
                kib => Some(kib * 1024),
            },
            shutdown_grace: self
                .shutdown_grace
                .map(Duration::from_secs)
                .or(options.shutdown_grace)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        })
    }
}
