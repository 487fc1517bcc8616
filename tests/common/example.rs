//! The bundled example image server as a child process, as a newcomer runs it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The resident memory of process `pid`, in bytes (from `/proc`); 0 once it is gone.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `cargo test` builds the examples next to the test binaries (`target/<profile>/examples`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --all-features` in the workspace's root, \
         which builds the library's examples",
        binary.display()
    );
    binary
}

pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now, in bytes (from `/proc`).
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example image server on an ephemeral port: admin token `admin-secret`, and a member
/// `u1` of project `proj1`.
pub fn start(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut command = Command::new(example_binary("image_server"));
    command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--admin-token",
            "admin-secret",
            "--user",
            "u1=proj1:member",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        // The tests that read `rss()` count live memory, not what glibc keeps for reuse: with a
        // fixed mmap threshold, a freed chunk of 128 KiB or more goes straight back to the kernel.
        .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072");
    spawn(command)
}

/// The `image-cache-server` binary (the server crate's), built by `cargo test` next to the test
/// binaries.
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("image-cache-server");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --all-features` in the workspace's root, \
         which builds the server crate's binaries",
        binary.display()
    );
    binary
}

/// The cache server in front of `upstream`, its cache in `cache_dir`, managed and prefetching
/// with the example server's admin token.
pub fn start_proxy(upstream: &str, cache_dir: &std::path::Path) -> Server {
    start_server(upstream, cache_dir, &[])
}

/// [`start_proxy`] with more arguments.
pub fn start_server(upstream: &str, cache_dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut command = Command::new(server_binary());
    command
        .args(["--bind", "127.0.0.1:0", "--upstream", upstream])
        .args([
            "--service-token",
            "admin-secret",
            "--manage-token",
            "admin-secret",
        ])
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(extra);
    spawn(command)
}

/// A cache server configured by a file whose `[cache_server]` section adds `lines`, started
/// through `sh -c` with `shell` before it (`ulimit -n 1024`, or nothing), with `args`; its
/// stderr (the log) is gathered in the returned buffer.
pub fn start_logged(
    upstream: &str,
    cache_dir: &std::path::Path,
    lines: &str,
    shell: &str,
    args: &[&str],
) -> (Server, std::sync::Arc<std::sync::Mutex<String>>) {
    let config = cache_dir.with_extension("conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nbind_host = 127.0.0.1\nbind_port = 0\n\n\
             [cache_server]\nupstream = {upstream}\nservice_token = admin-secret\n\
             manage_token = admin-secret\nshutdown_grace = 1\n{lines}\n",
            cache_dir.display()
        ),
    )
    .unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{shell}\nexec \"$0\" \"$@\""))
        .arg(server_binary())
        .arg("--config-file")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "info");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let gathered = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = gathered.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = match lines.next() {
        Some(Ok(line)) => line,
        _ => panic!(
            "the server printed nothing; its log: {}",
            log.lock().unwrap()
        ),
    };
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (Server { child, url }, log)
}

/// The example `name` with `args`, once it prints `listening on http://ADDR`.
pub fn start_example(name: &str, args: &[&std::ffi::OsStr]) -> Server {
    let mut command = Command::new(example_binary(name));
    command.args(args);
    spawn(command)
}

/// Starts a server and waits for its `listening on http://ADDR` line.
fn spawn(mut command: Command) -> Server {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the server printed nothing").unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    visibility: &str,
    data: &[u8],
) -> String {
    let created = client
        .post(format!("{url}/v2/images"))
        .header("x-auth-token", token)
        .body(format!(r#"{{"name": "cirros", "disk_format": "qcow2", "container_format": "bare", "visibility": "{visibility}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let image: serde_json::Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    assert_eq!(image["status"], "queued");
    let id = image["id"].as_str().unwrap().to_owned();
    let put = put_image_data(client, url, token, &id, data).await;
    assert_eq!(put.status(), 204);
    id
}

/// `PUT /v2/images/{id}/file` of `data` through `url` as `token`: the API's answer.
pub async fn put_image_data(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
    data: &[u8],
) -> reqwest::Response {
    client
        .put(format!("{url}/v2/images/{id}/file"))
        .header("x-auth-token", token)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// `GET url` with `token` as `X-Auth-Token`.
pub async fn get_as(client: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    client
        .get(url)
        .header("x-auth-token", token)
        .send()
        .await
        .unwrap()
}

/// `GET url` with `token`, its body read as JSON.
pub async fn json_as(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    serde_json::from_slice(&get_as(client, url, token).await.bytes().await.unwrap()).unwrap()
}

/// Waits until the cache API at `base` lists `id` as cached (`GET /v2/cache` as `token`): the
/// committed file is renamed into place a moment before its record is written, so the file alone
/// does not say the commit is over. On a timeout, the panic shows the last listing and `context`.
pub async fn wait_listed(
    base: &str,
    token: &str,
    id: &str,
    within: std::time::Duration,
    context: &str,
) {
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let listing = json_as(&client, &format!("{base}/v2/cache"), token).await;
        let cached = listing["cached_images"]
            .as_array()
            .is_some_and(|records| records.iter().any(|r| r["image_id"] == id));
        if cached {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{id} was not listed as cached within {within:?}: {listing}{context}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
