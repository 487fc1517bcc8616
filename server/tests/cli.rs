//! The operator binaries against a running example server (and without one).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::example::{start, upload, wait_listed, Server};
use tower_image_cache::store::Expected;
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

const ADMIN: &str = "admin-secret";

/// Runs a binary of this crate with `args`, feeding `stdin`.
fn run(binary: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        .env_remove("OS_AUTH_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`run`] off the test's runtime, which keeps serving the in-process servers meanwhile.
async fn run_aside(binary: &'static str, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(binary, &args, "")
    })
    .await
    .unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// `image-cache-manage -H <server> [--os-auth-token admin] args...`
fn manage(server: &Server, token: &str, args: &[&str], stdin: &str) -> Output {
    let host = server.url.trim_start_matches("http://").to_owned();
    let mut all = vec!["-H", host.as_str(), "--os-auth-token", token];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_image-cache-manage"), &all, stdin)
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", text(output));
    text(output)
}

fn failed(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1: {}",
        text(output)
    );
    text(output)
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An active image whose data the example API has lost (its store file removed): it can be
/// queued, and stays queued (every prefetch of it fails).
async fn unreadable_image(server: &Server, data_dir: &Path) -> String {
    let client = reqwest::Client::new();
    let id = upload(&client, &server.url, ADMIN, "private", b"lost bytes").await;
    std::fs::remove_file(data_dir.join("images").join(&id)).unwrap();
    id
}

/// Queues an id through the legacy route (which checks, as `PUT /v2/cache/{id}` does, that the
/// image exists and is active).
async fn queue_unknown(server: &Server, id: &str) {
    let client = reqwest::Client::new();
    let response = client
        .put(format!("{}/v2/queued_images/{id}", server.url))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

const UNKNOWN: &str = "11111111-2222-3333-4444-555555555555";

/// Downloads image `id` through `url` as the admin, whole (a miss fills the cache).
async fn download(client: &reqwest::Client, url: &str, id: &str) {
    client
        .get(format!("{url}/v2/images/{id}/file"))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_subcommand_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let cache_dir = dir.path().join("cache");
    let lost = unreadable_image(&server, dir.path()).await;

    assert!(ok(&manage(&server, ADMIN, &["list-cached"], "")).contains("No cached images."));
    assert!(ok(&manage(&server, ADMIN, &["list-queued"], "")).contains("No queued images."));

    let id = upload(&client, &server.url, ADMIN, "private", &[5u8; 70_000]).await;
    let queued = ok(&manage(
        &server,
        ADMIN,
        &["-f", "-v", "queue-image", &id],
        "",
    ));
    assert!(
        queued.contains(&format!("Queued image {id} for caching")),
        "{queued}"
    );
    wait_listed(&server.url, ADMIN, &id, Duration::from_secs(20), "").await;
    let listed = ok(&manage(&server, ADMIN, &["list-cached"], ""));
    assert!(listed.contains("Found 1 cached images..."), "{listed}");
    for column in [
        "ID",
        "Last Accessed (UTC)",
        "Last Modified (UTC)",
        "Size",
        "Hits",
        &id,
        "70000",
    ] {
        assert!(listed.contains(column), "{column} in {listed}");
    }

    queue_unknown(&server, &lost).await;
    let listed = ok(&manage(&server, ADMIN, &["list-queued"], ""));
    assert!(
        listed.contains("Found 1 queued images...") && listed.contains(&lost),
        "{listed}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&manage(&server, ADMIN, &["--json", "list-cached"], ""))).unwrap();
    assert_eq!(json["cached_images"][0]["image_id"], id.as_str());
    assert_eq!(json["cached_images"][0]["size"], 70_000);

    let pruned = ok(&manage(&server, ADMIN, &["prune"], ""));
    assert!(pruned.contains("pruned 0 images, 0 bytes"), "{pruned}");
    let cleaned = ok(&manage(&server, ADMIN, &["clean"], ""));
    assert!(
        cleaned.contains("cleaned 0 invalid and 0 stalled files"),
        "{cleaned}"
    );

    ok(&manage(
        &server,
        ADMIN,
        &["-f", "delete-queued-image", &lost],
        "",
    ));
    assert!(ok(&manage(&server, ADMIN, &["list-queued"], "")).contains("No queued images."));
    queue_unknown(&server, &lost).await;
    let deleted = ok(&manage(
        &server,
        ADMIN,
        &["-f", "-v", "delete-all-queued-images"],
        "",
    ));
    assert!(deleted.contains("Deleted 1 queued images"), "{deleted}");

    ok(&manage(
        &server,
        ADMIN,
        &["-f", "delete-cached-image", &id],
        "",
    ));
    assert!(!cache_dir.join(&id).exists());
    download(&client, &server.url, &id).await;
    wait_listed(&server.url, ADMIN, &id, Duration::from_secs(20), "").await;
    let deleted = ok(&manage(
        &server,
        ADMIN,
        &["-f", "-v", "delete-all-cached-images"],
        "",
    ));
    assert!(deleted.contains("Deleted 1 cached images"), "{deleted}");
    assert!(!cache_dir.join(&id).exists());

    assert!(ok(&manage(&server, ADMIN, &["help"], "")).contains("delete-all-queued-images"));
    assert!(ok(&manage(&server, ADMIN, &["help", "queue-image"], ""))
        .contains("queue-image <IMAGE_ID>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_bad_input_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let id = upload(&client, &server.url, ADMIN, "private", b"image bytes").await;
    download(&client, &server.url, &id).await;
    let cached = dir.path().join("cache").join(&id);
    wait_for("the commit", || cached.exists()).await;

    for answer in ["n\n", "\n", ""] {
        let output = manage(&server, ADMIN, &["delete-cached-image", &id], answer);
        assert!(ok(&output).contains(&format!("Delete cached image {id}? [y/N]")));
        assert!(cached.exists(), "answer {answer:?} kept the image");
    }
    ok(&manage(
        &server,
        ADMIN,
        &["delete-cached-image", &id],
        "y\n",
    ));
    assert!(!cached.exists());

    assert!(failed(&manage(
        &server,
        ADMIN,
        &["-f", "queue-image", "not-a-uuid"],
        ""
    ))
    .contains("Image ID 'not-a-uuid' is not a valid UUID."));
    assert!(failed(&manage(
        &server,
        ADMIN,
        &["-f", "queue-image", &id, UNKNOWN],
        ""
    ))
    .contains("first and only argument"));
    assert!(failed(&manage(&server, ADMIN, &["-f", "queue-image"], ""))
        .contains("first and only argument"));
    assert!(
        failed(&manage(&server, "wrong-token", &["list-cached"], ""))
            .contains("Not authorized to make this request.")
    );
    assert!(failed(&manage(&server, ADMIN, &["frobnicate"], ""))
        .contains("Unknown command: frobnicate"));

    let plain_dir = tempfile::tempdir().unwrap();
    let plain = start(plain_dir.path(), &["--no-cache"]);
    let host = plain.url.trim_start_matches("http://");
    let output = failed(&manage(&plain, ADMIN, &["list-cached"], ""));
    assert!(
        output.contains(&format!(
            "Cache management middleware not enabled on host {host}"
        )),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_hosts_in_one_table_and_a_down_host_named() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (start(dir_a.path(), &[]), start(dir_b.path(), &[]));
    let client = reqwest::Client::new();
    for (server, dir) in [(&a, &dir_a), (&b, &dir_b)] {
        let id = upload(&client, &server.url, ADMIN, "private", b"bytes").await;
        download(&client, &server.url, &id).await;
        wait_for("the commit", || dir.path().join("cache").join(&id).exists()).await;
    }
    let (host_a, host_b) = (
        a.url.trim_start_matches("http://"),
        b.url.trim_start_matches("http://"),
    );
    let binary = env!("CARGO_BIN_EXE_image-cache-manage");

    let both = ok(&run(
        binary,
        &[
            "-H",
            host_a,
            "-H",
            host_b,
            "--os-auth-token",
            ADMIN,
            "list-cached",
        ],
        "",
    ));
    assert!(
        both.contains("Found 2 cached images on 2 nodes...") && both.contains("Node"),
        "{both}"
    );
    assert!(both.contains(host_a) && both.contains(host_b), "{both}");
    let json: serde_json::Value = serde_json::from_str(&ok(&run(
        binary,
        &[
            "-H",
            host_a,
            "-H",
            host_b,
            "--os-auth-token",
            ADMIN,
            "--json",
            "list-cached",
        ],
        "",
    )))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let down = "127.0.0.1:9";
    let output = run(
        binary,
        &[
            "-H",
            host_a,
            "-H",
            down,
            "--os-auth-token",
            ADMIN,
            "list-cached",
        ],
        "",
    );
    let said = failed(&output);
    assert!(
        said.contains(host_a) && said.contains(&format!("host {down} is unreachable")),
        "{said}"
    );
}

/// A cache with three 1000-byte images, a failed fill in invalid/ and a two-day-old fill its
/// process left in incomplete/ (whichever tool opens the cache first removes it).
fn prepare(cache_dir: &Path) {
    let cache = ImageCache::open(CacheConfig::new(cache_dir)).unwrap();
    for n in 0..3 {
        let id = ImageId::new(&format!("img{n}")).unwrap();
        let mut fill = cache
            .begin_fill(&id, Expected::default().size(1000))
            .unwrap();
        fill.write(&[n as u8; 1000]).unwrap();
        fill.finish().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(cache);
    std::fs::write(cache_dir.join("invalid/failed"), b"x").unwrap();
    let stalled = cache_dir.join("incomplete/stalled");
    std::fs::write(&stalled, b"x").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&stalled)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("glance-cache.conf");
    let text = format!(
        "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_max_size = 1500\n",
        dir.join("cache").display()
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A cron tool's flags to reach the server on `port` as the admin.
fn through_server<'a>(config: &'a str, port: &'a str) -> [&'a str; 8] {
    [
        "--config-file",
        config,
        "-H",
        "127.0.0.1",
        "-p",
        port,
        "--os-auth-token",
        ADMIN,
    ]
}

/// The summary without its "(directly on ...)" / "(through ...)" tail.
fn summary(output: &Output) -> String {
    let said = ok(output);
    said.split(" (").next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn pruner_and_cleaner_give_the_same_result_online_and_offline() {
    let (offline, online) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&offline, &online] {
        prepare(&dir.path().join("cache"));
    }
    let (offline_conf, online_conf) = (write_config(offline.path()), write_config(online.path()));
    let pruner = env!("CARGO_BIN_EXE_image-cache-pruner");
    let cleaner = env!("CARGO_BIN_EXE_image-cache-cleaner");

    let pruned_offline = run(pruner, &["--config-file", &offline_conf], "");
    assert!(
        ok(&pruned_offline).contains("directly on"),
        "{}",
        text(&pruned_offline)
    );
    let cleaned_offline = run(cleaner, &["--config-file", &offline_conf], "");

    let server = start(online.path(), &["--config-file", &online_conf]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let through = through_server(&online_conf, &port);
    let pruned_online = run(pruner, &through, "");
    assert!(
        ok(&pruned_online).contains("through the server"),
        "{}",
        text(&pruned_online)
    );
    let cleaned_online = run(cleaner, &through, "");

    assert_eq!(summary(&pruned_offline), "pruned 2 images, 2000 bytes");
    assert_eq!(summary(&pruned_online), summary(&pruned_offline));
    assert_eq!(
        summary(&cleaned_offline),
        "cleaned 1 invalid and 0 stalled files"
    );
    assert_eq!(summary(&cleaned_online), summary(&cleaned_offline));
    for sub in ["", "incomplete", "invalid"] {
        let (a, b) = (
            offline.path().join("cache").join(sub),
            online.path().join("cache").join(sub),
        );
        assert_eq!(listing(&a), listing(&b), "{sub}");
    }
    assert!(listing(&offline.path().join("cache/incomplete")).is_empty());
    assert!(
        offline.path().join("cache/img2").exists(),
        "the most recent image stays"
    );

    // Without a token the server refuses, and the tool says so with a non-zero exit.
    let refused = run(
        pruner,
        &[
            "--config-file",
            &online_conf,
            "-H",
            "127.0.0.1",
            "-p",
            &port,
        ],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Not authorized"),
        "{}",
        text(&refused)
    );
    let bad_config = run(
        pruner,
        &["--config-file", "/nonexistent/glance-cache.conf"],
        "",
    );
    assert!(!bad_config.status.success());
    assert!(
        text(&bad_config).contains("/nonexistent/glance-cache.conf"),
        "{}",
        text(&bad_config)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefetcher_runs_the_queue_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path());
    let client = reqwest::Client::new();
    // The image API without a cache of its own serves the offline prefetcher.
    let api_dir = tempfile::tempdir().unwrap();
    let api = start(api_dir.path(), &["--no-cache"]);
    let id = upload(&client, &api.url, ADMIN, "private", &[3u8; 1200]).await;
    {
        let cache = ImageCache::open(CacheConfig::new(dir.path().join("cache"))).unwrap();
        cache.queue_image(&ImageId::new(&id).unwrap()).unwrap();
    }
    let port = api.url.rsplit(':').next().unwrap().to_owned();
    let prefetcher = env!("CARGO_BIN_EXE_image-cache-prefetcher");
    let output = run(prefetcher, &through_server(&conf, &port), "");
    assert!(
        ok(&output).contains("prefetched 1 of 1 queued images"),
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read(dir.path().join("cache").join(&id)).unwrap(),
        vec![3u8; 1200]
    );

    // Online: the server holding the cache is asked to run its queue.
    let server = start(dir.path(), &["--config-file", &conf]);
    let id = upload(&client, &server.url, ADMIN, "private", &[4u8; 100]).await;
    queue_unknown(&server, &id).await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let output = run(prefetcher, &through_server(&conf, &port), "");
    assert!(
        ok(&output).contains("through the server"),
        "{}",
        text(&output)
    );
    wait_for("the online prefetch", || {
        dir.path().join("cache").join(&id).exists()
    })
    .await;
}

/// With its node stopped, the prefetcher fetches the queue from the node's `[cache_server]
/// upstream as the node's identity (its `service_token`), not from the stopped node's port.
#[tokio::test(flavor = "multi_thread")]
async fn the_offline_prefetcher_fetches_from_the_nodes_upstream_as_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let api_dir = tempfile::tempdir().unwrap();
    let api = start(api_dir.path(), &["--no-cache"]);
    let id = upload(&client, &api.url, ADMIN, "private", &[8u8; 1300]).await;
    // The node's port: nothing listens there (the node is stopped).
    let stopped = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = stopped.local_addr().unwrap().port();
    drop(stopped);
    let conf = dir.path().join("glance-api.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nbind_port = {dead_port}\n\n\
             [cache_server]\nupstream = {}\nservice_token = {ADMIN}\n",
            dir.path().join("cache").display(),
            api.url
        ),
    )
    .unwrap();
    {
        let cache = ImageCache::open(CacheConfig::new(dir.path().join("cache"))).unwrap();
        cache.queue_image(&ImageId::new(&id).unwrap()).unwrap();
    }
    let prefetcher = env!("CARGO_BIN_EXE_image-cache-prefetcher");
    let output = run(prefetcher, &["--config-file", conf.to_str().unwrap()], "");
    let said = ok(&output);
    assert!(
        said.contains("prefetched 1 of 1 queued images")
            && said.contains(&format!("from the upstream {}", api.url)),
        "{said}"
    );
    assert!(
        said.contains(&format!("fetched {id}: 1300 bytes in ")),
        "{said}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("cache").join(&id)).unwrap(),
        vec![8u8; 1300]
    );
}

/// An image API that sends each image's MD5 in one header form: RFC 1864's base64
/// `Content-MD5` (`b64`), Glance v1's hex `x-image-meta-checksum` (`v1`), or a wrong
/// `x-image-meta-checksum` (`wrong`).
async fn md5_forms_api() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path as UrlPath;
    use axum::http::HeaderMap;
    use base64::Engine;
    use md5::Digest;

    async fn file(UrlPath(id): UrlPath<String>) -> (HeaderMap, Vec<u8>) {
        let data = format!("the bytes of {id}").into_bytes();
        let md5 = md5::Md5::digest(&data);
        let mut headers = HeaderMap::new();
        let (name, value) = match id.as_str() {
            "b64" => (
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            ),
            "v1" => ("x-image-meta-checksum", hex::encode(md5)),
            _ => ("x-image-meta-checksum", hex::encode([0u8; 16])),
        };
        headers.insert(name, value.parse().unwrap());
        (headers, data)
    }
    let app = axum::Router::new().route("/v2/images/{id}/file", axum::routing::get(file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offline_prefetcher_verifies_both_md5_header_forms() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path());
    let cache_dir = dir.path().join("cache");
    {
        let cache = ImageCache::open(CacheConfig::new(&cache_dir)).unwrap();
        for id in ["b64", "v1", "wrong"] {
            cache.queue_image(&ImageId::new(id).unwrap()).unwrap();
        }
    }
    let (port, server) = md5_forms_api().await;
    let prefetcher = env!("CARGO_BIN_EXE_image-cache-prefetcher");
    let output = run_aside(prefetcher, &through_server(&conf, &port)).await;
    server.abort();

    // The wrong checksum fails the run, naming the image; the two right ones are cached.
    assert!(!output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("prefetched 2 of 3 queued images"), "{said}");
    assert!(
        said.contains("wrong: verification failed: md5 mismatch"),
        "{said}"
    );
    for id in ["b64", "v1"] {
        assert_eq!(
            std::fs::read(cache_dir.join(id)).unwrap(),
            format!("the bytes of {id}").into_bytes(),
            "{id}"
        );
    }
    assert!(!cache_dir.join("wrong").exists());
    let cache = ImageCache::open(CacheConfig::new(&cache_dir)).unwrap();
    assert_eq!(
        cache.queued_images().unwrap(),
        [ImageId::new("wrong").unwrap()],
        "a failed prefetch stays queued"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tools_find_the_server_at_bind_port() {
    let dir = tempfile::tempdir().unwrap();
    prepare(&dir.path().join("cache"));
    let conf = write_config(dir.path());
    let server = start(dir.path(), &["--config-file", &conf]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    // glance-api.conf names the port the server listens on; no -p is given.
    let api_conf = dir.path().join("glance-api.conf");
    std::fs::write(&api_conf, format!("[DEFAULT]\nbind_port = {port}\n")).unwrap();
    let api_conf = api_conf.display().to_string();

    let pruner = env!("CARGO_BIN_EXE_image-cache-pruner");
    let pruned = run(
        pruner,
        &[
            "--config-file",
            &api_conf,
            "--config-file",
            &conf,
            "--os-auth-token",
            ADMIN,
        ],
        "",
    );
    assert!(
        ok(&pruned).contains("through the server at 127.0.0.1"),
        "{}",
        text(&pruned)
    );
    let listed = run(
        env!("CARGO_BIN_EXE_image-cache-manage"),
        &[
            "--config-file",
            &api_conf,
            "-H",
            "127.0.0.1",
            "--os-auth-token",
            ADMIN,
            "list-cached",
        ],
        "",
    );
    assert!(
        ok(&listed).contains("Found 1 cached images"),
        "{}",
        text(&listed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_read_as_sentences_without_a_token_or_from_a_server_that_is_not_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let manage_bin = env!("CARGO_BIN_EXE_image-cache-manage");
    let no_token = tokio::task::spawn_blocking(move || {
        Command::new(manage_bin)
            .args(["-H", "127.0.0.1", "-p", &port, "list-cached"])
            .env_remove("OS_AUTH_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!no_token.status.success());
    assert!(
        text(&no_token).contains(
            "Not authorized to make this request: no token was given (source an openrc, pass \
             --os-cloud, or pass --os-auth-token)."
        ),
        "{}",
        text(&no_token)
    );

    // Something else answers on the port: an HTML error page, summarised, not pasted.
    let page = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::response::Html(
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad \
                 Gateway</h1></center><hr><center>nginx</center></body></html>",
            ),
        )
    });
    let said = list_cached_at(page).await;
    assert!(
        said.contains("an HTML page titled \"502 Bad Gateway\""),
        "{said}"
    );
    assert!(!said.contains("<center>"), "{said}");

    // A token the node does not accept (expired, unknown) reads differently from a missing one.
    let expired = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": {"code": 401, "message": "expired"}})),
        )
    });
    let said = list_cached_at(expired).await;
    assert!(
        said.contains(
            "The token was not accepted (401): it is unknown or has expired; get a new one."
        ),
        "{said}"
    );
}

/// `image-cache-manage list-cached` with the admin token against `app` on an ephemeral port;
/// it must fail, and what it printed is returned.
async fn list_cached_at(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let manage_bin = env!("CARGO_BIN_EXE_image-cache-manage");
    let args = [
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "--os-auth-token",
        ADMIN,
        "list-cached",
    ];
    let output = run_aside(manage_bin, &args).await;
    assert!(!output.status.success());
    text(&output)
}

#[tokio::test(flavor = "multi_thread")]
async fn list_cached_shows_fills_and_queue_image_waits_for_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    // A slow image store: a fill of 6 MiB takes a few seconds.
    let server = start(dir.path(), &["--backend-rate", "2MiB"]);
    let client = reqwest::Client::new();
    let slow = upload(&client, &server.url, ADMIN, "private", &[5u8; 6 << 20]).await;
    let waited = upload(&client, &server.url, ADMIN, "private", &[6u8; 3 << 20]).await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let cache_dir = dir.path().join("cache");

    // A download in progress is listed with how far it has got.
    let downloading = {
        let (client, url) = (
            client.clone(),
            format!("{}/v2/images/{slow}/file", server.url),
        );
        tokio::spawn(async move {
            let response = client.get(url).header("x-auth-token", ADMIN).send().await;
            response.unwrap().bytes().await.unwrap().len()
        })
    };
    wait_for("the fill to start", || {
        std::fs::read_dir(cache_dir.join("incomplete"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    })
    .await;
    let manage_bin = env!("CARGO_BIN_EXE_image-cache-manage");
    let listed = run_aside(
        manage_bin,
        &[
            "-H",
            "127.0.0.1",
            "-p",
            &port,
            "--os-auth-token",
            ADMIN,
            "list-cached",
        ],
    )
    .await;
    let said = ok(&listed);
    assert!(said.contains("Being cached now:"), "{said}");
    let line = said.lines().find(|l| l.contains(&slow)).unwrap_or_default();
    assert!(line.contains(&format!("of {} bytes (", 6 << 20)), "{said}");
    assert_eq!(downloading.await.unwrap(), 6 << 20);

    // --wait returns once the image is cached.
    let started = Instant::now();
    let queued = run_aside(
        manage_bin,
        &[
            "-H",
            "127.0.0.1",
            "-p",
            &port,
            "--os-auth-token",
            ADMIN,
            "-f",
            "--wait",
            "queue-image",
            &waited,
        ],
    )
    .await;
    assert!(
        ok(&queued).contains(&format!("Image {waited} is cached")),
        "{}",
        text(&queued)
    );
    // Not a terminal (as under cron): progress as lines, never a bar redrawn with \r.
    let said = ok(&queued);
    let progress: Vec<&str> = said
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{waited} ")) && l.contains(&format!(" of {} bytes (", 3 << 20))
        })
        .collect();
    assert!(!progress.is_empty() && !said.contains('\r'), "{said}");
    assert!(
        cache_dir.join(&waited).exists(),
        "cached when --wait returns"
    );
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "it did wait"
    );

    // An image that takes longer than --wait-timeout: a non-zero exit saying so, still queued.
    let big = upload(&client, &server.url, ADMIN, "private", &[7u8; 8 << 20]).await;
    let late = run_aside(
        manage_bin,
        &[
            "-H",
            "127.0.0.1",
            "-p",
            &port,
            "--os-auth-token",
            ADMIN,
            "-f",
            "--wait",
            "--wait-timeout",
            "1",
            "queue-image",
            &big,
        ],
    )
    .await;
    assert!(!late.status.success());
    assert!(
        text(&late).contains(&format!(
            "image {big} was not cached on host 127.0.0.1 within 1 s; it stays queued"
        )),
        "{}",
        text(&late)
    );
}
