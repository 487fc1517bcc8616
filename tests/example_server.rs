//! The bundled example image server, end to end over a real socket, as a newcomer uses it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use md5::Digest;

/// `cargo test` builds the examples next to the test binaries (`target/<profile>/examples`).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples",
        binary.display()
    );
    binary
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(example_binary("image_server"))
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

async fn upload(
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
    let put = client
        .put(format!("{url}/v2/images/{id}/file"))
        .header("x-auth-token", token)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    id
}

#[tokio::test]
async fn upload_then_download_twice_goes_miss_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let id = upload(&client, &server.url, "admin-secret", "private", &data).await;

    let image: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{}/v2/images/{id}", server.url))
            .header("x-auth-token", "admin-secret")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
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

    // The commit (fsync, rename, index flush) finishes just after the client's last byte.
    let committed = dir.path().join("cache").join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !committed.exists() {
        assert!(
            Instant::now() < deadline,
            "the image was never committed to the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(&committed).unwrap(), data);

    let second = download().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-cache-status"], "HIT");
    assert_eq!(second.headers()["content-length"], "3000000");
    assert_eq!(second.bytes().await.unwrap(), data);

    // Another project cannot see the private image, cached or not; no token is a 401.
    let other = client
        .get(format!("{}/v2/images/{id}/file", server.url))
        .header("x-auth-token", "u1")
        .send()
        .await
        .unwrap();
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
        client
            .get(&url)
            .header("x-auth-token", "u1")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
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
    assert_eq!(
        client
            .get(&url)
            .header("x-auth-token", "u1")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

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
    let server = start(dir.path(), &["--no-cache"]);
    let client = reqwest::Client::new();
    let id = upload(&client, &server.url, "admin-secret", "private", b"plain").await;
    let response = client
        .get(format!("{}/v2/images/{id}/file", server.url))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
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

    let as_member = client
        .get(format!("{}/v2/cache", server.url))
        .header("x-auth-token", "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(as_member.status(), 403);
    let queued = client
        .put(format!("{}/v2/cache/{id}", server.url))
        .header("x-auth-token", "admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);

    let committed = dir.path().join("cache").join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !committed.exists() {
        assert!(
            Instant::now() < deadline,
            "the prefetcher never cached the image"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listing: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{}/v2/cache", server.url))
            .header("x-auth-token", "admin-secret")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listing["cached_images"][0]["image_id"], id.as_str());
    assert_eq!(listing["cached_images"][0]["size"], 500_000);

    let hit = client
        .get(format!("{}/v2/images/{id}/file", server.url))
        .header("x-auth-token", "u1")
        .send()
        .await
        .unwrap();
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
