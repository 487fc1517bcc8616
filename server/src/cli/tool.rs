//! The cron tools (pruner, cleaner, prefetcher): work directly on `image_cache_dir` when no
//! server holds it, or through the running server's management API when one does (the index's
//! lock tells which: [`StoreError::is_locked`]).

use std::path::{Path, PathBuf};

use tower_image_cache::config::{with_config_dirs, with_glance_files, ServerOptions};
use tower_image_cache::layer::expected_download;
use tower_image_cache::store::{ImageCache, StoreError};
use tower_image_cache::{CacheConfig, ImageId};

use super::client::ManageClient;
use super::identity::Auth;
use tower_image_cache::keystone::{AuthOptions, Keystone, TlsOptions};

/// The options every cron tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ToolArgs {
    /// A Glance configuration file (glance-api.conf, glance-cache.conf); repeatable, later
    /// files win. /etc/glance/glance-api.conf and /etc/glance/glance-cache.conf are read first
    /// when present.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_files: Vec<PathBuf>,
    /// A directory of *.conf files read after the --config-file files, sorted by name
    /// (oslo.config's --config-dir); repeatable.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dirs: Vec<PathBuf>,
    /// The local API server, used when it holds the cache.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    pub host: String,
    /// The local API server's port (default: bind_port from the configuration files, else
    /// 9292).
    #[arg(short, long)]
    pub port: Option<u16>,
    /// The admin token for the API server. Without it, the identity in the configuration files
    /// logs in to Keystone: admin_user, admin_password, admin_tenant_name and auth_url in
    /// [DEFAULT], else keystoneauth's options in [keystone_authtoken].
    #[allow(rustdoc::broken_intra_doc_links)] // clap's help text: the brackets are the file's
    #[arg(long, env = "OS_AUTH_TOKEN", hide_env_values = true)]
    pub os_auth_token: Option<String>,
}

/// What a cron tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chore {
    /// `image-cache-pruner`.
    Prune,
    /// `image-cache-cleaner`.
    Clean,
    /// `image-cache-prefetcher`.
    Prefetch,
}

impl Chore {
    /// The tool's program name.
    pub fn program(self) -> &'static str {
        match self {
            Chore::Prune => "image-cache-pruner",
            Chore::Clean => "image-cache-cleaner",
            Chore::Prefetch => "image-cache-prefetcher",
        }
    }

    /// What the tool does, in one sentence (its `--help` and its man page's).
    pub fn about(self) -> &'static str {
        match self {
            Chore::Prune => {
                "Prunes the image cache to image_cache_max_size, removing the least \
                             recently accessed images first."
            }
            Chore::Clean => {
                "Removes invalid and stalled (older than image_cache_stall_time) \
                             files from the image cache."
            }
            Chore::Prefetch => "Fetches the queued images into the image cache.",
        }
    }

    /// The tool's command line.
    pub fn command(self) -> clap::Command {
        use clap::Args;

        ToolArgs::augment_args(
            clap::Command::new(self.program())
                .about(self.about())
                .version(env!("CARGO_PKG_VERSION")),
        )
    }
}

impl ToolArgs {
    fn files(&self) -> Result<Vec<PathBuf>, String> {
        with_config_dirs(&self.config_files, &self.config_dirs).map_err(|err| err.to_string())
    }

    fn config(&self) -> Result<CacheConfig, String> {
        let files = self.files()?;
        if files.is_empty() {
            return Err("no configuration: pass --config-file FILE (a glance-cache.conf with image_cache_dir)".into());
        }
        CacheConfig::from_files(&files).map_err(|err| err.to_string())
    }

    /// The server's port: `--port`, else `bind_port` from the configuration files, else 9292.
    fn port(&self) -> Result<u16, String> {
        match self.port {
            Some(port) => Ok(port),
            None => {
                let options = ServerOptions::from_files(self.files()?);
                Ok(options.map_err(|err| err.to_string())?.port())
            }
        }
    }

    /// The token given, else the Keystone identity of the configuration files, else nobody.
    fn auth(&self) -> Result<Auth, String> {
        if let Some(token) = &self.os_auth_token {
            return Ok(Auth::Token(token.clone()));
        }
        match AuthOptions::from_files(self.files()?).map_err(|err| err.to_string())? {
            Some(options) => Keystone::new(options)
                .map(Auth::Keystone)
                .map_err(|err| err.to_string()),
            None => Ok(Auth::Anonymous),
        }
    }

    fn client(&self) -> Result<ManageClient, String> {
        let auth = self.auth()?;
        let tls = auth.tls(TlsOptions::default());
        ManageClient::with_auth(&self.host, self.port()?, auth, &tls)
    }

    /// Where an offline prefetch downloads from: the node's `[cache_server] upstream` as the
    /// node's own identity (`--os-auth-token`, else its `service_token`, else its Keystone
    /// identity) with its upstream TLS options, when the files name one; else the image API at
    /// `--host`/`--port` (a Glance that holds the cache itself).
    fn source(&self) -> Result<(ManageClient, String), String> {
        let options = ServerOptions::from_files(self.files()?).map_err(|err| err.to_string())?;
        let Some(upstream) = &options.upstream else {
            let client = self.client()?;
            let from = format!("from the image API at {}", client.base_url());
            return Ok((client, from));
        };
        let auth = match (&self.os_auth_token, &options.service_token) {
            (Some(token), _) | (None, Some(token)) => Auth::Token(token.clone()),
            (None, None) => self.auth()?,
        };
        let tls = TlsOptions::new(
            options.upstream_cafile.clone(),
            options.upstream_insecure.unwrap_or(false),
        );
        let client = ManageClient::with_auth(upstream, self.port()?, auth, &tls)?;
        Ok((client, format!("from the upstream {upstream}")))
    }
}

/// `bind_port` from Glance's files (its own in `/etc/glance` when present, then `files`), else
/// Glance's default: the port the tools call when no `--port` is given.
pub fn bind_port(files: &[PathBuf]) -> Result<u16, String> {
    let options =
        ServerOptions::from_files(with_glance_files(files)).map_err(|err| err.to_string())?;
    Ok(options.port())
}

/// Runs `chore`; returns the one-line summary, or the reason it failed.
pub async fn run_maintenance(chore: Chore, args: &ToolArgs) -> Result<String, String> {
    let config = args.config()?;
    let dir = config.image_cache_dir.clone();
    let opened = tokio::task::spawn_blocking(move || ImageCache::open(config))
        .await
        .map_err(|err| err.to_string())?;
    match opened {
        Ok(cache) => offline(chore, cache, args, &dir).await,
        Err(err) if err.is_locked() => online(chore, args).await,
        Err(err) => Err(format!("cannot open the cache at {}: {err}", dir.display())),
    }
}

async fn online(chore: Chore, args: &ToolArgs) -> Result<String, String> {
    let client = args.client()?;
    let through = format!("through the server at {}", client.node());
    match chore {
        Chore::Prune => {
            let pruned = client.prune().await.map_err(|err| err.to_string())?;
            Ok(format!(
                "pruned {} images, {} bytes ({through})",
                pruned.total_files_pruned, pruned.total_bytes_pruned
            ))
        }
        Chore::Clean => {
            let cleaned = client.clean().await.map_err(|err| err.to_string())?;
            Ok(format!(
                "cleaned {} invalid and {} stalled files ({through})",
                cleaned.invalid_removed, cleaned.stalled_removed
            ))
        }
        Chore::Prefetch => {
            let queued = client
                .list()
                .await
                .map_err(|err| err.to_string())?
                .queued_images
                .len();
            client.prefetch().await.map_err(|err| err.to_string())?;
            Ok(format!(
                "asked the server to fetch its {queued} queued images ({through})"
            ))
        }
    }
}

async fn offline(
    chore: Chore,
    cache: ImageCache,
    args: &ToolArgs,
    dir: &Path,
) -> Result<String, String> {
    let directly = format!("directly on {}", dir.display());
    match chore {
        Chore::Prune => {
            let pruned = store(&cache, ImageCache::prune).await?;
            Ok(format!(
                "pruned {} images, {} bytes ({directly})",
                pruned.total_files_pruned, pruned.total_bytes_pruned
            ))
        }
        Chore::Clean => {
            let cleaned = store(&cache, ImageCache::clean).await?;
            Ok(format!(
                "cleaned {} invalid and {} stalled files ({directly})",
                cleaned.invalid_removed, cleaned.stalled_removed
            ))
        }
        Chore::Prefetch => prefetch_offline(cache, args, &directly).await,
    }
}

/// Runs a store operation on the blocking pool; a failure comes back as its sentence.
async fn store<T: Send + 'static>(
    cache: &ImageCache,
    work: impl FnOnce(&ImageCache) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    cache.blocking(work).await.map_err(|err| err.to_string())
}

/// With no server holding the cache, downloads each queued image straight into the cache,
/// verified as any fill: from the node's upstream when the files name one (the node itself is
/// stopped), else from the image API at `--host`/`--port`.
async fn prefetch_offline(
    cache: ImageCache,
    args: &ToolArgs,
    directly: &str,
) -> Result<String, String> {
    let queued = store(&cache, ImageCache::queued_images).await?;
    let (client, from) = args.source()?;
    let mut failures = Vec::new();
    for id in &queued {
        let started = std::time::Instant::now();
        match fetch_into(&cache, &client, id).await {
            Ok(size) => {
                // A line per image: cron mails, and journald keeps, what was done.
                let seconds = started.elapsed().as_secs_f64();
                println!("fetched {id}: {size} bytes in {seconds:.1} s");
                let id = id.clone();
                store(&cache, move |c| c.delete_queued_image(&id)).await?;
            }
            Err(reason) => failures.push(format!("{id}: {reason}")),
        }
    }
    let fetched = queued.len() - failures.len();
    let summary = format!(
        "prefetched {fetched} of {} queued images ({directly}, {from})",
        queued.len()
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}; failed: {}", failures.join("; ")))
    }
}

/// Downloads `id` into the cache, verified; its size.
async fn fetch_into(
    cache: &ImageCache,
    client: &ManageClient,
    id: &ImageId,
) -> Result<u64, String> {
    if let Some(cached) = cache.cached_image(id) {
        return Ok(cached.size);
    }
    let mut response = client
        .download(id.as_str())
        .await
        .map_err(|err| err.to_string())?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("the image API answered {}", response.status()));
    }
    let expected = expected_download(response.content_length(), response.headers(), None);
    let mut fill = cache
        .begin_fill(id, expected)
        .map_err(|err| err.to_string())?;
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
        tokio::task::block_in_place(|| fill.write(&chunk)).map_err(|err| err.to_string())?;
    }
    tokio::task::block_in_place(|| fill.finish())
        .map(|cached| cached.size)
        .map_err(|err| err.to_string())
}

/// The whole of a cron tool's `main`: parse the options, run, print, exit.
pub fn tool_main(chore: Chore) -> std::process::ExitCode {
    use clap::FromArgMatches;

    let name = chore.program();
    let args = match ToolArgs::from_arg_matches(&chore.command().get_matches()) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_maintenance(chore, &args)) {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{name}: {reason}");
            std::process::ExitCode::FAILURE
        }
    }
}
