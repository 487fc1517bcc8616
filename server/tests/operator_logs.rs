//! What an operator reads of a running node: one access line per request (who, what, how it was
//! answered, how much, how fast), fill start and end lines, oslo.log's options (`log_file`,
//! `log_dir`, `use_json`, `debug`, `use_stderr`), SIGHUP reopening the log file, and the
//! histograms of `/metrics` after a MISS, a HIT and a failed fill.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::example::server_binary;
use common::raw_upstream::{Mode, RawUpstream};

/// A node whose configuration file has `defaults` in `[DEFAULT]` and `server` in
/// `[cache_server]`, without `RUST_LOG` (the options decide); its URL, and its stderr as it
/// comes.
struct Node {
    child: Child,
    url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, upstream: &str, defaults: &str, server: &str) -> Node {
    let config = dir.join("glance-api.conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nbind_host = 127.0.0.1\nbind_port = 0\n{defaults}\n\n\
             [cache_server]\nupstream = {upstream}\nservice_token = admin-secret\n\
             manage_token = admin-secret\nshutdown_grace = 1\n{server}\n",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(server_binary())
        .arg("--config-file")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let gathered = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = gathered.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("the node did not start: {}", stderr.lock().unwrap()));
    let url = first.strip_prefix("listening on ").unwrap().to_owned();
    std::thread::spawn(move || for _ in lines {});
    Node { child, url, stderr }
}

/// Waits until `file` holds a line containing every one of `parts`; that line.
async fn line_with(file: &Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {parts:?} in {}:\n{text}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn image() -> Bytes {
    Bytes::from(
        (0..300_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("x-auth-token", "admin-secret");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_fill_lines_and_sighup_in_a_text_log_file() {
    let upstream = RawUpstream::start(image(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let node = start(
        dir.path(),
        &upstream.url(),
        &format!("log_file = {}", log.display()),
        "trusted_proxies = 127.0.0.1",
    );
    let file = |id: &str| format!("{}/v2/images/{id}/file", node.url);

    // A MISS through a trusted proxy, then a HIT.
    let miss = get(&file("img-a"), &[("x-forwarded-for", "198.51.100.4")]).await;
    let request_id = miss.headers()["x-openstack-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(miss.bytes().await.unwrap(), image());
    let line = line_with(&log, &["tower_image_cache::access", "status=200", "MISS"]).await;
    for part in [
        "client=127.0.0.1",
        "forwarded_for=\"198.51.100.4\"",
        "method=GET",
        "path=/v2/images/img-a/file",
        "cache_status=\"MISS\"",
        "fill_source=\"upstream\"",
        "bytes=300000",
        "seconds=",
        "first_byte_seconds=",
        &format!("request_id=\"{request_id}\""),
        "outcome=\"complete\"",
    ] {
        assert!(
            line.contains(part),
            "{part} missing from the access line: {line}"
        );
    }
    let started = line_with(&log, &["fill started", "img-a"]).await;
    assert!(started.contains("expected_size=300000"), "{started}");
    let committed = line_with(&log, &["fill committed", "img-a"]).await;
    for part in ["size=300000", "seconds=", "mb_per_s=", "digest_seconds="] {
        assert!(committed.contains(part), "{part}: {committed}");
    }
    // Without a trusted proxy's word, what the client says is not in the line.
    let hit = get(&file("img-a"), &[]).await;
    assert_eq!(hit.headers()["x-cache-status"], "HIT");
    hit.bytes().await.unwrap();
    let line = line_with(&log, &["tower_image_cache::access", "HIT"]).await;
    assert!(
        line.contains("bytes=300000")
            && !line.contains("forwarded_for")
            && !line.contains("fill_source"),
        "{line}"
    );

    // A pass-through request and a management one get their lines too.
    get(&format!("{}/v2/images", node.url), &[])
        .await
        .bytes()
        .await
        .unwrap();
    line_with(
        &log,
        &[
            "tower_image_cache::access",
            "path=/v2/images ",
            "cache_status=\"-\"",
        ],
    )
    .await;
    get(&format!("{}/v2/cache", node.url), &[])
        .await
        .bytes()
        .await
        .unwrap();
    line_with(
        &log,
        &["tower_image_cache::access", "path=/v2/cache ", "status=200"],
    )
    .await;

    // Dependencies stay out of the default INFO log.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(" hyper") && !text.contains(" sled") && !text.contains(" DEBUG "),
        "{text}"
    );
    // Logging to a file, nothing goes to stderr (use_stderr is off).
    assert!(
        node.stderr.lock().unwrap().trim().is_empty(),
        "{}",
        node.stderr.lock().unwrap()
    );

    // logrotate moves the file and sends SIGHUP: the node writes to a new one.
    let rotated = dir.path().join("node.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    line_with(&log, &["SIGHUP: log file reopened"]).await;
    get(&file("img-a"), &[]).await.bytes().await.unwrap();
    line_with(&log, &["tower_image_cache::access", "HIT"]).await;
    assert!(node.child.try_wait_ok(), "SIGHUP does not stop the node");
}

trait StillRunning {
    fn try_wait_ok(&self) -> bool;
}

impl StillRunning for Child {
    fn try_wait_ok(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.id())).exists()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_in_log_dir_with_debug_and_the_histograms_after_a_miss_a_hit_and_a_failed_fill()
{
    let upstream = RawUpstream::start(image(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let node = start(
        dir.path(),
        &upstream.url(),
        &format!(
            "log_dir = {}\nuse_json = True\ndebug = True\nuse_stderr = true",
            logs.display()
        ),
        "",
    );
    let log = logs.join("image-cache-server.log");
    let file = |id: &str| format!("{}/v2/images/{id}/file", node.url);
    get(&file("img-a"), &[]).await.bytes().await.unwrap();
    line_with(&log, &["fill committed"]).await;
    get(&file("img-a"), &[]).await.bytes().await.unwrap();
    // A fill whose resumed bytes do not verify: the client's body ends in an error.
    upstream.set_mode(Mode::CutWrongBytes);
    let failed = get(&file("img-b"), &[]).await;
    assert_eq!(failed.status(), 200);
    assert!(
        failed.bytes().await.is_err(),
        "a failed fill is never a whole 200"
    );
    line_with(&log, &["fill ended uncommitted", "img-b"]).await;
    let access = line_with(&log, &["tower_image_cache::access", "img-b"]).await;

    // One JSON object a line, every line.
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let _: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    }
    let access: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(
        access["fields"]["path"], "/v2/images/img-b/file",
        "{access}"
    );
    assert_eq!(access["fields"]["cache_status"], "MISS", "{access}");
    assert_eq!(access["fields"]["outcome"], "error", "{access}");
    // debug = True: the node's and the library's DEBUG lines, and no dependency below WARN.
    let levels: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    assert!(levels.iter().any(|l| l["level"] == "DEBUG"), "{text}");
    for line in &levels {
        let target = line["target"].as_str().unwrap_or_default();
        let level = line["level"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("tower_image_cache")
                || target.starts_with("image_cache_server")
                || level == "WARN"
                || level == "ERROR",
            "a dependency's {level} line: {line}"
        );
    }
    // use_stderr: the same lines on stderr too.
    assert!(node.stderr.lock().unwrap().contains("fill committed"));

    let metrics = get(&format!("{}/metrics", node.url), &[])
        .await
        .text()
        .await
        .unwrap();
    for series in [
        "image_cache_request_duration_seconds_count{cache_status=\"miss\"} 2",
        "image_cache_request_duration_seconds_count{cache_status=\"hit\"} 1",
        "image_cache_time_to_first_byte_seconds_count{cache_status=\"hit\"} 1",
        "image_cache_fill_duration_seconds_count{outcome=\"committed\"} 1",
        "image_cache_fill_duration_seconds_count{outcome=\"failed\"} 1",
        "image_cache_fill_size_bytes_count 1",
        "image_cache_fills_in_progress 0",
        "image_cache_build_info{version=",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

/// What the node says when it cannot start: the operation and the path that failed and what to
/// do, never a Debug dump of the system's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_open_its_cache_names_the_operation_and_the_path() {
    let upstream = RawUpstream::start(image(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: its "subdirectory" cannot be created.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let cache_dir = blocker.join("cache");
    let output = Command::new(server_binary())
        .args(["--bind", "127.0.0.1:0", "--upstream", &upstream.url()])
        .arg("--cache-dir")
        .arg(&cache_dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains(&format!(
            "cannot open the cache at {0}: cannot create the directory {0}: ",
            cache_dir.display()
        )),
        "{said}"
    );
    assert!(!said.contains("Os {") && !said.contains("kind:"), "{said}");

    // A second node on the first one's directory: told who holds it, in a sentence.
    let first = start(dir.path(), &upstream.url(), "", "");
    let output = Command::new(server_binary())
        .args(["--bind", "127.0.0.1:0", "--upstream", &upstream.url()])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("held by another process"), "{said}");
    assert!(
        !said.contains("Os {") && !said.contains("WouldBlock"),
        "{said}"
    );
    drop(first);
}

/// The command line wins over the files (`--cache-dir` with a file that names no
/// `image_cache_dir`), and Glance's own `cert_file` and `key_file` serve HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_overrides_the_files_and_glances_cert_file_serves_https() {
    let upstream = RawUpstream::start(image(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = common::test_ca(dir.path());
    let config = dir.path().join("glance-api.conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\ncert_file = {}\nkey_file = {}\n\n\
             [cache_server]\nupstream = {}\n",
            cert.display(),
            key.display(),
            upstream.url()
        ),
    )
    .unwrap();
    let cache_dir = dir.path().join("from-the-command-line");
    let mut child = Command::new(server_binary())
        .arg("--cache-dir")
        .arg(&cache_dir)
        .arg("--config-file")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let first = first.unwrap_or_else(|| {
        panic!(
            "the node did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        first.starts_with("listening on https://127.0.0.1:"),
        "{first}"
    );
    assert!(
        cache_dir.join("incomplete").is_dir(),
        "the command line's cache directory"
    );

    // Only one of the pair: a sentence.
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\ncert_file = {}\n\n[cache_server]\nupstream = {}\n",
            cache_dir.display(),
            cert.display(),
            upstream.url()
        ),
    )
    .unwrap();
    let output = Command::new(server_binary())
        .arg("--config-file")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("cert_file and key_file go together"),
        "{said}"
    );
}

/// `use_journal`: without a journal the node says so and logs to standard error; with one (a
/// socket of the test's own at journald's address, where none runs) the entries arrive there
/// with the program's identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_journal_writes_to_the_journal_or_says_why_not() {
    const SOCKET: &str = "/run/systemd/journal/socket";
    if Path::new(SOCKET).exists() {
        println!("SKIPPED: a journald runs here; this test fakes one where none does");
        return;
    }
    let upstream = RawUpstream::start(image(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &upstream.url(), "use_journal = true", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.stderr.lock().unwrap().contains("serving") {
        assert!(Instant::now() < deadline, "{}", node.stderr.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.stderr
            .lock()
            .unwrap()
            .contains("use_journal is set but the systemd journal cannot be reached"),
        "{}",
        node.stderr.lock().unwrap()
    );
    drop(node);

    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let journal = std::os::unix::net::UnixDatagram::bind(SOCKET).unwrap();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(SOCKET);
        }
    }
    let _remove = Remove;
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &upstream.url(), "use_journal = true", "");
    get(&format!("{}/v2/images/img-j/file", node.url), &[])
        .await
        .bytes()
        .await
        .unwrap();
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !entries
        .iter()
        .any(|e: &String| e.contains("tower_image_cache::access"))
    {
        let n = journal
            .recv(&mut buf)
            .unwrap_or_else(|err| panic!("no access entry in the journal ({err}): {entries:?}"));
        entries.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let access = entries
        .iter()
        .find(|e| e.contains("tower_image_cache::access"))
        .unwrap();
    // journald's native protocol: KEY=value, or KEY, a length and the value for binary-safe ones.
    for (key, value) in [
        ("SYSLOG_IDENTIFIER", "image-cache-server"),
        ("F_PATH", "/v2/images/img-j/file"),
        ("F_CACHE_STATUS", "MISS"),
    ] {
        let at = access
            .find(key)
            .unwrap_or_else(|| panic!("no {key}: {access:?}"));
        assert!(access[at..].contains(value), "{key}: {access:?}");
    }
    assert!(
        node.stderr.lock().unwrap().trim().is_empty(),
        "with a journal, nothing on stderr: {}",
        node.stderr.lock().unwrap()
    );
}
