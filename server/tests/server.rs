//! `image-cache-server` as an operator runs it: configured by Glance-style files, stopped with
//! SIGTERM in the middle of a fill, restarted, and asked `/healthz`.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::example::{server_binary, start, upload};
use common::SmallFs;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

const ADMIN: &str = "admin-secret";

/// A glance-cache.conf for a cache server on an ephemeral port in front of `upstream`.
fn write_config(dir: &Path, cache_dir: &Path, upstream: &str) -> std::path::PathBuf {
    let path = dir.join("glance-cache.conf");
    let text = format!(
        "[DEFAULT]\nimage_cache_dir = {}\nbind_host = 127.0.0.1\nbind_port = 0\n\n\
         [cache_server]\nupstream = {upstream}\nservice_token = {ADMIN}\nmanage_token = {ADMIN}\n\
         shutdown_grace = 1\n",
        cache_dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The server, from its configuration file alone.
fn start_configured(config: &Path) -> (std::process::Child, String) {
    let (child, url, _) = start_with_lines(config, false);
    (child, url)
}

/// The server; with `metrics`, also the address of its metrics listener.
fn start_with_lines(config: &Path, metrics: bool) -> (std::process::Child, String, Option<String>) {
    use std::io::BufRead;
    let mut child = Command::new(server_binary())
        .arg("--config-file")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the server printed nothing").unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let metrics_url = metrics.then(|| {
        let second = lines.next().expect("no metrics line").unwrap();
        second
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
            .to_owned()
    });
    std::thread::spawn(move || for _ in lines {});
    (child, url, metrics_url)
}

fn listing(dir: &Path) -> Vec<String> {
    common::listing(dir)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_fill_rolls_back_and_the_restart_serves() {
    let upstream_dir = tempfile::tempdir().unwrap();
    // A slow image store, so the fill is still running when the signal comes.
    let upstream = start(
        upstream_dir.path(),
        &["--no-cache", "--backend-rate", "4MiB"],
    );
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    let id = upload(&client, &upstream.url, ADMIN, "private", &data).await;

    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let config = write_config(dir.path(), &cache_dir, &upstream.url);
    let (mut server, url) = start_configured(&config);
    let file_url = format!("{url}/v2/images/{id}/file");
    let download = {
        let (client, file_url) = (client.clone(), file_url.clone());
        tokio::spawn(async move {
            let response = client
                .get(file_url)
                .header("x-auth-token", ADMIN)
                .send()
                .await?;
            response.bytes().await
        })
    };
    wait_for("the fill to start", || {
        !listing(&cache_dir.join("incomplete")).is_empty()
    })
    .await;

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful stop exits 0: {status}");
    // The download was cut short: the client sees an error, never a short image that looks whole.
    let cut = download.await.unwrap();
    assert!(cut.is_err() || cut.unwrap().len() != data.len());
    assert!(
        listing(&cache_dir.join("incomplete")).is_empty(),
        "the fill was rolled back"
    );
    {
        let cache = ImageCache::open(CacheConfig::new(&cache_dir)).unwrap();
        assert!(!cache.is_cached(&ImageId::new(&id).unwrap()));
        for image in cache.cached_images() {
            assert!(cache_dir.join(&image.image_id).is_file());
        }
    }

    // The restarted server fills and serves.
    let (mut server, url) = start_configured(&config);
    let file_url = format!("{url}/v2/images/{id}/file");
    for expected in ["MISS", "HIT"] {
        let response = client
            .get(&file_url)
            .header("x-auth-token", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cache-status"], expected);
        assert!(response.bytes().await.unwrap() == data);
        wait_for("the commit", || cache_dir.join(&id).exists()).await;
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test]
async fn healthz_says_when_the_cache_directory_turns_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    // The fills' directory on a file system of its own, to turn read-only under the server.
    std::fs::create_dir_all(cache_dir.join("incomplete")).unwrap();
    let fs = match SmallFs::mount_on(&cache_dir.join("incomplete"), "1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED healthz_says_when_...: cannot mount a small tmpfs here ({why})");
            return;
        }
    };
    let config = write_config(dir.path(), &cache_dir, "http://127.0.0.1:9");
    let (mut server, url) = start_configured(&config);
    let health = || async {
        let response = reqwest::get(format!("{url}/healthz")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(health().await, (200, "ok\n".to_owned()));

    // The disk is probed at most every 2 s: the change shows within a few seconds.
    fs.set_read_only(true);
    let (status, reason) = health_within(&health, 503).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("cannot write a probe file in "), "{reason}");
    assert!(reason.contains("Read-only file system"), "{reason}");

    fs.set_read_only(false);
    assert_eq!(health_within(&health, 200).await.0, 200);
    let _ = server.kill();
    let _ = server.wait();
}

/// Asks `health` until it answers `status` (at most 10 s); returns the last answer.
async fn health_within<F, Fut>(health: &F, status: u16) -> (u16, String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = health().await;
        if answer.0 == status || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_burst_of_health_checks_probes_the_disk_a_few_times_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("cache"), "http://127.0.0.1:9");
    let (mut server, url) = start_configured(&config);
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let response = client.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let seconds = started.elapsed().as_secs();
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let probes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("image_cache_health_probes_total "))
        .unwrap_or_else(|| panic!("no health probe counter in {text}"))
        .parse()
        .unwrap();
    // One probe per 2 s interval begun, however many callers.
    assert!(probes >= 1, "{probes}");
    assert!(
        probes <= seconds / 2 + 2,
        "{probes} probes for 500 calls in {seconds} s"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn bad_configurations_are_refused_in_a_sentence_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("glance-api.conf");
    for (text, says) in [
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n",
            "no image API to cache: pass --upstream URL",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\nbind_port = 99999\n",
            "[DEFAULT] bind_port = \"99999\": must be a port, 0 to 65535",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = glance\n",
            "must be an http:// or https:// URL with a host, e.g. http://glance:9292",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = https://glance:9292\nupstream_cafile = /nonexistent/ca.pem\n",
            "the upstream's CA file /nonexistent/ca.pem cannot be read",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = https://glance:9292\nupstream_insecure = maybe\n",
            "[cache_server] upstream_insecure = \"maybe\": must be true or false",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = http://glance:9292\nmetrics_bind = anywhere\n",
            "[cache_server] metrics_bind = \"anywhere\" is not an address",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\nimage_cache_driver = centralized_db\nworker_self_reference_url = http://n1:9292\n[cache_server]\nupstream = http://glance:9292\n",
            "[DEFAULT] image_cache_driver = \"centralized_db\": needs the central database: set connection in the [database] section",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\nimage_cache_driver = centralized_db\n[database]\nconnection = mysql+pymysql://glance:pw@db/glance\n[cache_server]\nupstream = http://glance:9292\n",
            "needs worker_self_reference_url in [DEFAULT]",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\nimage_cache_driver = centralized_db\nworker_self_reference_url = http://n1:9292\n[database]\nconnection = mssql://db/glance\n[cache_server]\nupstream = http://glance:9292\n",
            "[database] connection = \"mssql://db/glance\": names the database \"mssql\"",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\nimage_cache_driver = xattr\n[cache_server]\nupstream = http://glance:9292\n",
            "[DEFAULT] image_cache_driver = \"xattr\": is refused",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = http://glance:9292\nshutdown_grace = soon\n",
            "[cache_server] shutdown_grace = \"soon\": must be a whole number",
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/nowhere\n[cache_server]\nupstream = http://glance:9292\npeer_min_rate = fast\n",
            "[cache_server] peer_min_rate = \"fast\": must be a whole number",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = Command::new(server_binary())
            .arg("--config-file")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(said.lines().count(), 1, "one line: {said}");
        assert!(said.starts_with("image-cache-server: "), "{said}");
        assert!(said.contains(says), "{text}: {said}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/image-cache-server.service"),
    )
    .unwrap();
    let packaged = "ExecStart=/usr/bin/image-cache-server --config-file";
    assert!(unit.contains(packaged), "{unit}");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED the_systemd_unit_verifies: systemd-analyze is not installed");
        return;
    }
    // Verified against the binary just built (verify checks that ExecStart can run).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image-cache-server.service");
    let here = format!("ExecStart={} --config-file", server_binary().display());
    std::fs::write(&path, unit.replace(packaged, &here)).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(!said.contains("image-cache-server.service:"), "{said}");
}

#[tokio::test]
async fn metrics_and_health_on_a_listener_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("cache"), "http://127.0.0.1:9");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}metrics_bind = 127.0.0.1:0\n")).unwrap();
    let (mut server, url, metrics) = start_with_lines(&config, true);
    let metrics = metrics.unwrap();
    assert_ne!(url, metrics);
    let scraped = reqwest::get(format!("{metrics}/metrics")).await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = scraped.text().await.unwrap();
    assert!(text.contains("image_cache_images 0"), "{text}");
    assert_eq!(
        reqwest::get(format!("{metrics}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Only those two: the image API is not reachable there.
    assert_eq!(
        reqwest::get(format!("{metrics}/v2/images"))
            .await
            .unwrap()
            .status(),
        404
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Under `Type=notify`: the node says `READY=1` once its index is reconciled and it listens
/// (a request then finds it answering), and `STOPPING=1` at SIGTERM; to a path socket and to an
/// abstract one, as systemd may pass either in `NOTIFY_SOCKET`.
#[test]
fn the_node_tells_systemd_when_it_is_ready_and_when_it_stops() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("cache"), "http://127.0.0.1:9");
    let path = dir.path().join("notify");
    let abstract_name = format!("tower-image-cache-test-{}", std::process::id());
    let sockets = [
        (
            UnixDatagram::bind(&path).unwrap(),
            path.display().to_string(),
        ),
        (
            UnixDatagram::bind_addr(
                &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
            )
            .unwrap(),
            format!("@{abstract_name}"),
        ),
    ];
    for (socket, notify_socket) in sockets {
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut child = Command::new(server_binary())
            .arg("--config-file")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut said = [0u8; 256];
        let len = socket.recv(&mut said).expect("no READY=1 within 30 s");
        let said = String::from_utf8_lossy(&said[..len]).into_owned();
        assert!(said.starts_with("READY=1\n"), "{notify_socket}: {said:?}");
        // Ready means listening: the first line is printed, and /healthz answers.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        let addr = url.strip_prefix("http://").unwrap().parse().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let health = runtime.block_on(common::raw_status(addr, "GET", "/healthz", ""));
        assert_eq!(health, 200, "{notify_socket}");

        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let mut said = [0u8; 256];
        let len = socket.recv(&mut said).expect("no STOPPING=1 at SIGTERM");
        let said = String::from_utf8_lossy(&said[..len]).into_owned();
        assert!(
            said.starts_with("STOPPING=1\n"),
            "{notify_socket}: {said:?}"
        );
        assert!(child.wait().unwrap().success(), "{notify_socket}");
    }
}
