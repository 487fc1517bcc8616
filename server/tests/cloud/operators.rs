//! Glance's own clients and `image-cache-manage` as a Glance operator uses them: python-glanceclient
//! and `glance-cache-manage` during a fill, the legacy deletes' semantics, and
//! `glance-cache-manage`'s flags given to our tool.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::example;
use crate::common::openstack;

const ADMIN: &str = "admin-secret";

/// `glance --os-image-url URL --os-auth-token ADMIN args...` (python-glanceclient from the test
/// venv, without Keystone).
fn glance(venv: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(venv.join("bin/glance"));
    command
        .args(["--os-image-url", url, "--os-auth-token", ADMIN])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("PYTHONWARNINGS", "ignore")
        .env("OS_IDENTITY_API_VERSION", "none");
    openstack::run_output(&mut command)
}

/// `glance-cache-manage -H 127.0.0.1 -p PORT --os-auth-token ADMIN -f args...` from the venv.
fn glance_cache_manage(venv: &Path, port: &str, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(venv.join("bin/glance-cache-manage"));
    command
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            port,
            "--os-auth-token",
            ADMIN,
            "-f",
        ])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("PYTHONWARNINGS", "ignore");
    openstack::run_output(&mut command)
}

/// Our `image-cache-manage -H 127.0.0.1 -p PORT -A ADMIN args...`.
fn ours_at(port: &str, args: &[&str]) -> Output {
    let mut all = vec!["-H", "127.0.0.1", "-p", port, "-A", ADMIN];
    all.extend_from_slice(args);
    ours(&all)
}

/// Our `image-cache-manage` with exactly `args`; its output, stdout and stderr apart.
fn ours(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
        .args(args)
        .env_remove("OS_AUTH_TOKEN")
        .env_remove("OS_AUTH_URL")
        .env_remove("OS_CLOUD")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glances_clients_print_glances_listing_during_a_fill_and_the_legacy_deletes_keep_to_their_word(
) {
    let test = "glances_clients_print_glances_listing_during_a_fill_and_the_legacy_deletes_keep_to_their_word";
    let Some(venv) = openstack::venv(test) else {
        return;
    };
    // A slow backend: a 6 MiB image takes 3 s to fill, time enough to list it in progress.
    let data_dir = tempfile::tempdir().unwrap();
    let server = example::start(data_dir.path(), &["--backend-rate", "2MiB"]);
    let http = reqwest::Client::new();
    let small = example::upload(&http, &server.url, ADMIN, "public", b"small, cached first").await;
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let filling = example::upload(&http, &server.url, ADMIN, "public", &big).await;
    let file = |id: &str| format!("{}/v2/images/{id}/file", server.url);
    let got = example::get_as(&http, &file(&small), ADMIN).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"small, cached first");
    example::wait_listed(&server.url, ADMIN, &small, Duration::from_secs(20), "").await;

    let download = {
        let (http, url) = (http.clone(), file(&filling));
        tokio::spawn(async move { example::get_as(&http, &url, ADMIN).await.bytes().await })
    };
    // Until the node reports the fill (our parameter), then Glance's listing has Glance's keys.
    let listing_url = format!("{}/v2/cache?in_progress=true", server.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listing = example::json_as(&http, &listing_url, ADMIN).await;
        if listing["in_progress"][0]["image_id"] == filling.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fill never showed: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plain = example::json_as(&http, &format!("{}/v2/cache", server.url), ADMIN).await;
    let keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cached_images", "queued_images"], "{plain}");

    let (ok, listed) = tokio::task::block_in_place(|| glance(&venv, &server.url, &["cache-list"]));
    assert!(ok, "{listed}");
    assert!(listed.contains(&small), "{listed}");
    assert!(
        !listed.contains(&filling) && !listed.contains("in_progress"),
        "glance cache-list shows only cached and queued images: {listed}"
    );
    // Our tool shows the fill, with its progress.
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let out = ours_at(&port, &["list-cached"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&filling),
        "{}",
        text(&out.stdout)
    );
    let body = download.await.unwrap().unwrap();
    assert!(body == big, "the download is whole");
    example::wait_listed(&server.url, ADMIN, &filling, Duration::from_secs(30), "").await;

    // delete-queued-image of a cached image dequeues only: the copy stays, with Glance's tool
    // and with ours.
    let (ok, said) = tokio::task::block_in_place(|| {
        glance_cache_manage(&venv, &port, &["delete-queued-image", &small])
    });
    assert!(ok, "{said}");
    let out = ours_at(&port, &["-f", "delete-queued-image", &small]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = example::json_as(&http, &format!("{}/v2/cache", server.url), ADMIN).await;
    let cached: Vec<&str> = listing["cached_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    assert!(cached.contains(&small.as_str()), "still cached: {listing}");

    // A queued image: delete-cached-image leaves it queued, delete-queued-image dequeues it.
    // (The legacy PUT queues; the prefetcher then fetches it at 2 MiB/s, 3 s for this image.)
    let queued = example::upload(&http, &server.url, ADMIN, "public", &big).await;
    let put = http
        .put(format!("{}/v2/queued_images/{queued}", server.url))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let out = ours_at(&port, &["-f", "delete-cached-image", &queued]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours_at(&port, &["list-queued"]);
    assert!(
        text(&out.stdout).contains(&queued),
        "still queued: {}",
        text(&out.stdout)
    );
    let out = ours_at(&port, &["-f", "delete-queued-image", &queued]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours_at(&port, &["list-queued"]);
    assert!(
        !text(&out.stdout).contains(&queued),
        "dequeued: {}",
        text(&out.stdout)
    );

    // delete-cached-image uncaches.
    let out = ours_at(&port, &["-f", "delete-cached-image", &small]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours_at(&port, &["--json", "list-cached"]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = records["cached_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&small.as_str()), "{records}");
    // --json records carry Glance's id and checksum.
    let record = records["cached_images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["image_id"] == filling.as_str())
        .unwrap_or_else(|| panic!("{records}"));
    assert!(record["id"].is_i64(), "{record}");
    let md5 = md5_of(&big);
    assert_eq!(record["checksum"], md5.as_str(), "{record}");
}

fn md5_of(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// `glance-cache-manage`'s own flags work with our tool as with Glance's; errors go to standard
/// error, so `--json` output stays JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glance_cache_manages_flags_are_ours_and_errors_go_to_stderr() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = example::start(data_dir.path(), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let out = ours_at(&port, &["-k", "-v", "-d", "-f", "list-cached"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let errors = text(&out.stderr);
    assert!(
        errors.contains(&format!("REQ: GET http://127.0.0.1:{port}/v2/cache"))
            && errors.contains("RESP: 200 OK"),
        "-d writes each request and answer to stderr: {errors}"
    );
    for alias in ["--os_auth_token", "--auth_token", "--auth-token"] {
        let out = ours(&["-H", "127.0.0.1", "-p", &port, alias, ADMIN, "list-queued"]);
        assert!(out.status.success(), "{alias}: {}", text(&out.stderr));
    }
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-S",
        "noauth",
        "-A",
        ADMIN,
        "list-queued",
    ]);
    assert!(out.status.success(), "-S noauth: {}", text(&out.stderr));

    // A refused token: nothing on stdout, the reason on stderr, exit 1.
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        "wrong",
        "--json",
        "list-cached",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert!(!text(&out.stderr).trim().is_empty());
    let out = ours_at(&port, &["--json", "list-cached"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
}

/// Glance's rows of `cached_images` in `db`, read with Python's sqlite3: (image_id, hits,
/// last_accessed, size).
fn glance_rows(venv: &Path, db: &Path) -> Vec<(String, u64, f64, u64)> {
    let script = "import json, sqlite3, sys\n\
                  rows = sqlite3.connect(sys.argv[1]).execute('SELECT image_id, hits, last_accessed, size FROM cached_images').fetchall()\n\
                  print(json.dumps(rows))";
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(db)
        .output()
        .unwrap();
    let rows: Vec<(String, u64, f64, u64)> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)));
    rows
}

/// A node opened on a directory that real Glance 33's `sqlite` cache driver filled imports its
/// hit counts, times and queue once, logs it, and leaves Glance's `cache.db` untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moves_into_a_directory_glances_sqlite_cache_filled() {
    use crate::common::openstack::{create_image, log_in, Glance, Keystone, ADMIN_PASSWORD};
    let test = "a_node_moves_into_a_directory_glances_sqlite_cache_filled";
    let (Some(venv), Some(keystone)) = (openstack::venv(test), Keystone::shared(test)) else {
        return;
    };
    let glance = Glance::start(&venv, keystone, "sqlite");
    let admin = log_in(&keystone.url, "admin", ADMIN_PASSWORD, "admin").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let cached = create_image(&glance.url, &admin, &data).await;
    let queued = create_image(&glance.url, &admin, b"queued in Glance's cache").await;
    let glance_cache = glance.dir.join("image-cache");
    let http = reqwest::Client::new();
    // Three downloads from Glance: the first fills its cache, the next two are its hits.
    for round in 0..3 {
        let got = http
            .get(format!("{}/v2/images/{cached}/file", glance.url))
            .header("x-auth-token", &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "round {round}");
        assert!(got.bytes().await.unwrap() == data);
        let deadline = Instant::now() + Duration::from_secs(30);
        while glance_rows(&venv, &glance_cache.join("cache.db")).is_empty() {
            assert!(Instant::now() < deadline, "Glance never cached the image");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let put = http
        .put(format!("{}/v2/cache/{queued}", glance.url))
        .header("x-auth-token", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 202);
    assert!(
        glance_cache.join("queue").join(&queued).exists(),
        "Glance queued it in queue/"
    );

    // The operator moves the directory to the node (a copy here; Glance keeps running).
    let moved = tempfile::tempdir().unwrap();
    let dir = moved.path().join("image-cache");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&glance_cache)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copied.success());
    // Glance 33's PUT also hands the image to its cache worker thread, which takes it off the
    // queue whenever it gets to it (on a loaded machine, sometimes before the copy above): the
    // copy holds the queue as Glance wrote it, an empty file named by the id, asserted above.
    let queue_entry = dir.join("queue").join(&queued);
    if !queue_entry.exists() {
        eprintln!("Glance's cache worker took {queued} off its queue before the copy; put back");
        std::fs::write(&queue_entry, b"").unwrap();
    }
    let glance_db = dir.join("cache.db");
    let before = std::fs::read(&glance_db).unwrap();
    let rows = glance_rows(&venv, &glance_db);
    let (_, glance_hits, glance_accessed, size) = rows
        .iter()
        .find(|(id, ..)| *id == cached)
        .cloned()
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(glance_hits >= 1, "Glance counted its hits: {rows:?}");

    // The node starts on it and says what it imported.
    let output = Command::new(crate::common::example::server_binary())
        .args(["--bind", "127.0.0.1:0", "--upstream", &glance.url])
        .arg("--cache-dir")
        .arg(&dir)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut node = output;
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(node.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("listening on "), "{first}");
    let _ = node.kill();
    let logged = node.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&logged.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("imported Glance's cache records"))
        .unwrap_or_else(|| panic!("no import line in:\n{log}"));
    assert!(
        line.contains("records=1") && line.contains("queued=1"),
        "{line}"
    );
    assert!(
        !log.contains("corrupt"),
        "Glance's database is not taken for a broken index:\n{log}"
    );

    // What the cache now holds: Glance's counts and times, and its queue.
    let open =
        || tower_image_cache::ImageCache::open(tower_image_cache::CacheConfig::new(&dir)).unwrap();
    let cache = open();
    let id = tower_image_cache::ImageId::new(&cached).unwrap();
    let record = cache
        .cached_image(&id)
        .expect("the image Glance cached is cached");
    assert_eq!(record.hits, glance_hits);
    assert_eq!(record.size, size);
    assert!(
        (record.last_accessed - glance_accessed).abs() < 0.01,
        "{record:?}"
    );
    let queue: Vec<String> = cache
        .queued_images()
        .unwrap()
        .iter()
        .map(|q| q.as_str().to_owned())
        .collect();
    assert_eq!(queue, std::slice::from_ref(&queued));
    assert!(std::fs::read(dir.join(&cached)).unwrap() == data);
    drop(cache);
    // Imported once: opened again, the counts are not added twice.
    let cache = open();
    assert_eq!(cache.cached_image(&id).unwrap().hits, glance_hits);
    drop(cache);
    assert!(
        std::fs::read(&glance_db).unwrap() == before,
        "Glance's cache.db is untouched"
    );
    assert!(
        dir.join("cache.db.sled").is_dir(),
        "the node's index is beside it"
    );
}
