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
    let out = ours(&["-H", "127.0.0.1", "-p", &port, "-A", ADMIN, "list-cached"]);
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
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "-f",
        "delete-queued-image",
        &small,
    ]);
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
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "-f",
        "delete-cached-image",
        &queued,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours(&["-H", "127.0.0.1", "-p", &port, "-A", ADMIN, "list-queued"]);
    assert!(
        text(&out.stdout).contains(&queued),
        "still queued: {}",
        text(&out.stdout)
    );
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "-f",
        "delete-queued-image",
        &queued,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours(&["-H", "127.0.0.1", "-p", &port, "-A", ADMIN, "list-queued"]);
    assert!(
        !text(&out.stdout).contains(&queued),
        "dequeued: {}",
        text(&out.stdout)
    );

    // delete-cached-image uncaches.
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "-f",
        "delete-cached-image",
        &small,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "--json",
        "list-cached",
    ]);
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
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "-k",
        "-v",
        "-d",
        "-f",
        "list-cached",
    ]);
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
    let out = ours(&[
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        ADMIN,
        "--json",
        "list-cached",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
}
