//! `image-cache-manage`'s command line: Glance's `glance-cache-manage`, with `--all-nodes`.

use super::commands::COMMANDS;
use super::identity::OsArgs;

/// `image-cache-manage`'s arguments.
#[derive(clap::Parser, Debug)]
#[command(name = "image-cache-manage", version, about = "Manage the image cache of one or more API nodes", after_help = COMMANDS)]
pub struct ManageArgs {
    /// The command to execute, and its image id where it takes one.
    #[arg(value_name = "COMMAND", default_value = "help")]
    pub command: Vec<String>,
    /// Address of the API host; give it several times to act on every node. Default: the
    /// image endpoint of the Keystone catalog when logging in with Keystone (--os-auth-url,
    /// --os-cloud), else localhost.
    #[arg(short = 'H', long = "host", value_name = "ADDRESS")]
    pub hosts: Vec<String>,
    /// Port the API host listens on (default: bind_port from the configuration files, else
    /// 9292).
    #[arg(short, long)]
    pub port: Option<u16>,
    /// A Glance configuration file whose bind_port is the default port; repeatable, later
    /// files win. /etc/glance/glance-api.conf and /etc/glance/glance-cache.conf are read first
    /// when present.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_files: Vec<std::path::PathBuf>,
    /// A directory of *.conf files read after the --config-file files, sorted by name
    /// (oslo.config's --config-dir); repeatable.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dirs: Vec<std::path::PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Print more verbose output.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print debugging output: every request and its answer, on standard error.
    #[arg(short, long)]
    pub debug: bool,
    /// Who to be: a token, or a Keystone identity (keystoneauth's options).
    #[command(flatten)]
    pub os: OsArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Run the command on every node of the fleet (image_cache_driver = centralized_db): the
    /// nodes are read from the central database when a --config-file names [database]
    /// connection, else asked of the node given with --host.
    #[allow(rustdoc::broken_intra_doc_links)] // clap's help text: the brackets are the file's
    #[arg(long)]
    pub all_nodes: bool,
    /// With queue-image: queue the image on K nodes of the fleet, chosen by rendezvous hashing
    /// of its id (the same image lands on the same K nodes from any client); with peer_token
    /// set on the nodes, they fill from each other, reading the image API once.
    #[arg(long, value_name = "K", conflicts_with = "all_nodes", value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: Option<u32>,
    /// With queue-image: wait until the image is cached on every node, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wait_timeout: u64,
}
