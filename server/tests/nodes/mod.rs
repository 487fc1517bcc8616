//! `image-cache-server` processes of a fleet sharing one central database, each configured by a
//! Glance-style file alone, as an operator writes it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::example::{get_as, server_binary};
use crate::common::raw_upstream::RawUpstream;
use crate::db::TestDb;

pub const ADMIN: &str = "admin-secret";
/// The fleet's peer token in these tests.
pub const PEER_TOKEN: &str = "fleet-secret";

pub struct Node {
    pub child: Child,
    pub url: String,
    /// Its cache directory.
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A cache node from its configuration file alone, as an operator would write it: `extra`
/// lines in `[DEFAULT]`.
pub fn start_node(dir: &Path, upstream: &str, database: &str, extra: &str) -> Node {
    start_node_with(dir, upstream, database, extra, "")
}

/// [`start_node`] with `cache_server` lines in `[cache_server]` too. `extra` may name the
/// node's `worker_self_reference_url` (an address in front of it); else it is its own URL.
pub fn start_node_with(
    dir: &Path,
    upstream: &str,
    database: &str,
    extra: &str,
    cache_server: &str,
) -> Node {
    let here = Host {
        address: "127.0.0.1",
        netns: None,
    };
    start_node_on(&here, dir, upstream, database, (extra, cache_server))
}

/// Where a node runs: the address it listens on, in a network namespace or in the test's own.
pub struct Host<'a> {
    pub address: &'a str,
    pub netns: Option<&'a str>,
}

/// [`start_node_with`] on `host`, with `(extra, cache_server)` lines.
pub fn start_node_on(
    host: &Host<'_>,
    dir: &Path,
    upstream: &str,
    database: &str,
    (extra, cache_server): (&str, &str),
) -> Node {
    use std::io::BufRead;
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let address = host.address;
    let url = format!("http://{address}:{port}");
    let config = dir.join("glance-api.conf");
    let cache_dir = dir.join("cache");
    let advertised = if extra.contains("worker_self_reference_url") {
        String::new()
    } else {
        format!("worker_self_reference_url = {url}")
    };
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nbind_host = {address}\nbind_port = {port}\n\
             image_cache_driver = centralized_db\n{advertised}\n{extra}\n\
             [database]\nconnection = {database}\n\n\
             [cache_server]\nupstream = {upstream}\nservice_token = {ADMIN}\n\
             manage_token = {ADMIN}\nshutdown_grace = 1\n{cache_server}\n",
            cache_dir.display()
        ),
    )
    .unwrap();
    let mut command = match host.netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(server_binary());
            command
        }
        None => Command::new(server_binary()),
    };
    let mut child = command
        .arg("--config-file")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the node printed nothing").unwrap();
    assert_eq!(first, format!("listening on {url}"));
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        url,
        dir: cache_dir,
        config,
    }
}

pub async fn download(client: &reqwest::Client, node: &Node, id: &str) -> String {
    let response = get_as(client, &format!("{}/v2/images/{id}/file", node.url), ADMIN).await;
    assert_eq!(response.status(), 200);
    let status = response.headers()["x-cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    response.bytes().await.unwrap();
    status
}

/// A node of the fleet on `db` in front of `upstream`, filling from its peers; its log in
/// `node.log` beside its cache directory.
pub fn peer_node(work: &Path, name: &str, upstream: &RawUpstream, db: &TestDb) -> Node {
    let lines = format!("peer_token = {PEER_TOKEN}\n");
    let log = format!("log_file = {}", work.join(name).join("node.log").display());
    start_node_with(&work.join(name), &upstream.url(), &db.url, &log, &lines)
}
