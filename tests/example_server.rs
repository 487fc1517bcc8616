//! The bundled example image server, end to end over a real socket, as a newcomer uses it.

mod common;

use common::eventually;
use common::example::{get_as, json_as, start, upload, wait_listed};
use md5::Digest;

/// How long a commit may take to be listed (a loaded 2-core machine).
const WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn upload_then_download_twice_goes_miss_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let id = upload(&client, &server.url, "admin-secret", "private", &data).await;

    let image: serde_json::Value = json_as(
        &client,
        &format!("{}/v2/images/{id}", server.url),
        "admin-secret",
    )
    .await;
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], 3_000_000);
    assert_eq!(image["checksum"], hex::encode(md5::Md5::digest(&data)));
    assert_eq!(image["os_hash_algo"], "sha512");

    let download = || {
        client
            .get(format!("{}/v2/images/{id}/file", server.url))
            .header("x-auth-token", "admin-secret")
            .send()
    };
    let first = download().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    assert_eq!(first.bytes().await.unwrap(), data);

    // The commit (fsync, rename, then the record) finishes just after the client's last byte.
    let committed = dir.path().join("cache").join(&id);
    wait_listed(&server.url, "admin-secret", &id, WITHIN, "").await;
    assert_eq!(std::fs::read(&committed).unwrap(), data);

    let second = download().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-cache-status"], "HIT");
    assert_eq!(second.headers()["content-length"], "3000000");
    assert_eq!(second.bytes().await.unwrap(), data);

    // The metrics route, inside the layers since they are the outermost service, passes
    // through them with no token, and counts the hit.
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers().get("x-cache-status").is_none());
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("image_cache_responses_total{status=\"hit\"} 1\n"),
        "{text}"
    );

    // Another project cannot see the private image, cached or not; no token is a 401.
    let other = get_as(
        &client,
        &format!("{}/v2/images/{id}/file", server.url),
        "u1",
    )
    .await;
    assert_eq!(other.status(), 404);
    let anonymous = client
        .get(format!("{}/v2/images/{id}/file", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Deactivated: the member's download is refused by the API even though the file is cached.
    let public_id = upload(
        &client,
        &server.url,
        "admin-secret",
        "public",
        b"public bytes",
    )
    .await;
    let url = format!("{}/v2/images/{public_id}/file", server.url);
    assert_eq!(
        get_as(&client, &url, "u1").await.bytes().await.unwrap(),
        "public bytes".as_bytes()
    );
    let deactivated = client
        .post(format!(
            "{}/v2/images/{public_id}/actions/deactivate",
            server.url
        ))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(deactivated.status(), 204);
    assert_eq!(get_as(&client, &url, "u1").await.status(), 403);

    // Deleting the image evicts it.
    let deleted = client
        .delete(format!("{}/v2/images/{id}", server.url))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!committed.exists());
    assert_eq!(download().await.unwrap().status(), 404);
}

#[tokio::test]
async fn no_cache_mode_leaves_no_cache_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--no-cache", "--backend-rate", "1.5GB/s"]);
    let client = reqwest::Client::new();
    let id = upload(&client, &server.url, "admin-secret", "private", b"plain").await;
    let response = get_as(
        &client,
        &format!("{}/v2/images/{id}/file", server.url),
        "admin-secret",
    )
    .await;
    assert!(response.headers().get("x-cache-status").is_none());
    assert_eq!(response.bytes().await.unwrap(), "plain".as_bytes());
    assert!(!dir.path().join("cache").exists());

    let versions: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{}/versions", server.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(versions["versions"][0]["id"], "v2.18");
    assert_eq!(versions["versions"][0]["status"], "CURRENT");
}

#[tokio::test]
async fn the_admin_manages_the_cache_and_the_prefetcher_uses_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..500_000u32).map(|i| (i % 13) as u8).collect();
    // A member's private image: only its owner and the admin (the prefetcher) may read it.
    let id = upload(&client, &server.url, "u1", "private", &data).await;

    let as_member = get_as(&client, &format!("{}/v2/cache", server.url), "u1").await;
    assert_eq!(as_member.status(), 403);
    let queued = client
        .put(format!("{}/v2/cache/{id}", server.url))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);

    let committed = dir.path().join("cache").join(&id);
    wait_listed(
        &server.url,
        "admin-secret",
        &id,
        WITHIN,
        " (the prefetcher)",
    )
    .await;
    assert!(committed.exists());
    let listing: serde_json::Value =
        json_as(&client, &format!("{}/v2/cache", server.url), "admin-secret").await;
    assert_eq!(listing["cached_images"][0]["image_id"], id.as_str());
    assert_eq!(listing["cached_images"][0]["size"], 500_000);

    let hit = get_as(
        &client,
        &format!("{}/v2/images/{id}/file", server.url),
        "u1",
    )
    .await;
    assert_eq!(hit.headers()["x-cache-status"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);

    let deleted = client
        .delete(format!("{}/v2/cache/{id}", server.url))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!committed.exists());
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    for (flags, says) in [
        (&["--backend-rate", "fast"][..], "not a rate like 100MiB"),
        (&["--backend-rate", "0MiB"][..], "above zero"),
        (&["--backend-rate", "5 parsecs"][..], "unknown unit"),
        (&["--user", "t1"][..], "TOKEN=PROJECT:ROLE"),
        (&["--user", "=p:r"][..], "must not be empty"),
    ] {
        let output = std::process::Command::new(common::example::example_binary("image_server"))
            .args(flags)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flags:?}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(says), "{flags:?}: {said}");
    }
}

#[tokio::test]
async fn a_restart_reclaims_dead_fills_and_resumes_the_queue_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = start(dir.path(), &[]);
    let id = upload(
        &client,
        &server.url,
        "admin-secret",
        "private",
        &[7u8; 4096],
    )
    .await;
    drop(server); // killed: whatever it was doing stays on disk

    let cache_dir = dir.path().join("cache");
    {
        let cache =
            tower_image_cache::ImageCache::open(tower_image_cache::CacheConfig::new(&cache_dir))
                .unwrap();
        cache
            .queue_image(&tower_image_cache::ImageId::new(&id).unwrap())
            .unwrap();
    }
    // What a process killed mid-fill leaves.
    std::fs::write(cache_dir.join("incomplete").join(&id), [7u8; 1000]).unwrap();

    // The restarted server fetches the queue by itself, without a request.
    let _server = start(dir.path(), &[]);
    eventually("the queue to be resumed at start", || {
        cache_dir.join(&id).exists()
    })
    .await;
    assert_eq!(std::fs::read(cache_dir.join(&id)).unwrap(), vec![7u8; 4096]);
    assert_eq!(
        std::fs::read_dir(cache_dir.join("incomplete"))
            .unwrap()
            .count(),
        0,
        "the dead process's fill was reclaimed"
    );
}

#[test]
fn start_up_errors_are_one_sentence_naming_what_failed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let binary = common::example::example_binary("image_server");
    let output = std::process::Command::new(&binary)
        .args(["--bind", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    let line = said.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!("image_server: cannot listen on {addr}: ")),
        "{said}"
    );
    assert!(!said.contains("Os {"), "{said}");

    let config = dir.path().join("glance-cache.conf");
    std::fs::write(
        &config,
        "[DEFAULT]\nimage_cache_dir = /tmp/x\nimage_cache_max_size = -1\n",
    )
    .unwrap();
    let output = std::process::Command::new(&binary)
        .args(["--bind", "127.0.0.1:0", "--config-file"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.trim_end().ends_with(&format!(
            "image_server: {}: [DEFAULT] image_cache_max_size = \"-1\": must not be negative",
            config.display()
        )),
        "{said}"
    );
}

/// Each multihash the example can record (Glance's `hashing_algorithm`), and none at all: the
/// image's first download fills the cache, verified with that digest, and the next one is a hit.
/// A file changed behind the API's back is then refused by whichever digest verifies it.
#[tokio::test]
async fn fills_are_verified_with_each_hashing_algorithm() {
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    for algorithm in ["sha256", "sha384", "sha1", "md5", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path(), &["--hashing-algorithm", algorithm]);
        let client = reqwest::Client::new();
        let id = upload(&client, &server.url, "admin-secret", "public", &data).await;
        let image: serde_json::Value = json_as(
            &client,
            &format!("{}/v2/images/{id}", server.url),
            "admin-secret",
        )
        .await;
        let recorded = image["os_hash_algo"].as_str().unwrap_or("none");
        assert_eq!(recorded, algorithm, "{image}");
        let file = format!("{}/v2/images/{id}/file", server.url);
        let download = || get_as(&client, &file, "admin-secret");
        let first = download().await;
        assert_eq!(first.headers()["x-cache-status"], "MISS", "{algorithm}");
        assert_eq!(first.bytes().await.unwrap(), data, "{algorithm}");
        let committed = dir.path().join("cache").join(&id);
        wait_listed(&server.url, "admin-secret", &id, WITHIN, algorithm).await;
        assert!(committed.exists(), "{algorithm}");
        let second = download().await;
        assert_eq!(second.headers()["x-cache-status"], "HIT", "{algorithm}");
        assert_eq!(second.bytes().await.unwrap(), data, "{algorithm}");

        // The stored bytes change behind the API's back (same length): the fill is refused.
        let store = dir.path().join("images").join(&id);
        let mut changed = data.clone();
        changed[1234] ^= 0xff;
        std::fs::write(&store, &changed).unwrap();
        let deleted = client
            .delete(format!("{}/v2/cache/{id}", server.url))
            .header("x-auth-token", "admin-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204, "{algorithm}");
        let refused = download().await;
        assert_eq!(refused.headers()["x-cache-status"], "MISS", "{algorithm}");
        assert!(
            refused.bytes().await.is_err(),
            "{algorithm}: a body that failed verification must not end cleanly"
        );
        let invalid = dir.path().join("cache").join("invalid").join(&id);
        eventually(
            &format!("{algorithm}: the bad fill set aside in invalid/"),
            || invalid.exists(),
        )
        .await;
        assert!(!committed.exists(), "{algorithm}");
    }
}

/// The example API answers a range from its store (as Glance does), so a range miss through the
/// cache is a ranged read (206, its Content-Range), never the whole image sent for one byte (ten
/// such misses once read 1,280 MiB); the prefetch queued by the first reads the image once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_misses_read_their_range_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let id = upload(&client, &server.url, "u1", "private", &data).await;
    for at in 0..10u64 {
        let offset = at * 1_000_003;
        let response = client
            .get(format!("{}/v2/images/{id}/file", server.url))
            .header("x-auth-token", "u1")
            .header("range", format!("bytes={offset}-{offset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {offset}-{offset}/{}", data.len()).as_str()
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(&body[..], &data[offset as usize..offset as usize + 1]);
    }
    // The whole image, queued by the first range miss, is fetched once and cached.
    wait_listed(
        &server.url,
        "admin-secret",
        &id,
        std::time::Duration::from_secs(30),
        "",
    )
    .await;
}
