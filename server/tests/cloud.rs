//! The cache server in a real cloud: in front of a real Glance 33 behind a real Keystone 30
//! (from PyPI, under uWSGI), with its own Keystone identity and Keystone-checked management;
//! `image-cache-manage` with an openrc's variables and with clouds.yaml.
#[path = "../../tests/common/mod.rs"]
mod common;
// In this binary, to share its Keystone (and its minutes of waiting) with the tests above.
#[path = "cloud/glance_commands.rs"]
mod glance_commands;
#[path = "cloud/keystone.rs"]
mod keystone;
#[path = "cloud/operators.rs"]
mod operators;
#[path = "cloud/peers.rs"]
mod peers;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::example::{server_binary, wait_listed};
use common::openstack::{
    self, create_image, log_in, Glance, ADMIN_PASSWORD, DEMO_PASSWORD, OTHER_PASSWORD,
};

/// `image-cache-server` in front of `glance`, with the `glance` user as its Keystone identity
/// (from `[keystone_authtoken]`, as glance-api.conf has it).
struct CacheNode {
    url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for CacheNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(glance: &Glance, port: u16) -> CacheNode {
    start_node_with(glance, port, &[])
}

fn start_node_with(glance: &Glance, port: u16, extra: &[&std::ffi::OsStr]) -> CacheNode {
    start_node_configured(&glance.url, &glance.keystone.url, "", port, extra)
}

/// A node in front of `upstream`, logging in to `keystone`; `more` is appended to the
/// configuration file (after `[keystone_authtoken]`, or in sections of its own).
fn start_node_configured(
    upstream: &str,
    keystone: &str,
    more: &str,
    port: u16,
    extra: &[&std::ffi::OsStr],
) -> CacheNode {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("glance-api.conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {cache}\nbind_host = 127.0.0.1\nbind_port = {port}\n\n\
             [cache_server]\nupstream = {upstream}\nshutdown_grace = 1\n\n\
             [keystone_authtoken]\nauth_url = {keystone}\nauth_type = password\n\
             username = glance\npassword = glance-secret\nproject_name = service\n\
             user_domain_name = Default\nproject_domain_name = Default\n{more}",
            cache = dir.path().join("cache").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(server_binary())
        .arg("--config-file")
        .arg(&config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the server printed nothing").unwrap();
    let url = first.strip_prefix("listening on ").unwrap().to_owned();
    std::thread::spawn(move || for _ in lines {});
    CacheNode { url, dir, child }
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.header("x-auth-token", token);
    }
    request.send().await.unwrap()
}

fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn wait_cached(node: &CacheNode, token: &str, id: &str, within: Duration) {
    let log = format!("; see {}", node.dir.path().join("server.log").display());
    wait_listed(&node.url, token, id, within, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_keystone_downloads_are_cached_per_glances_answer_and_management_needs_admin() {
    let test = "behind_keystone_downloads_are_cached_per_glances_answer_and_management_needs_admin";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    let node = start_node(glance, 0);
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let other = log_in(keystone, "other", OTHER_PASSWORD, "other").await;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;

    // A member's image, uploaded through the node (passed through to Glance).
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let id = create_image(&node.url, &demo, &data).await;
    let file = format!("{}/v2/images/{id}/file", node.url);
    let first = get(&file, Some(&demo)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(cache_status(&first), "MISS");
    assert_eq!(first.bytes().await.unwrap(), data);
    let mut second = get(&file, Some(&demo)).await;
    for _ in 0..50 {
        if cache_status(&second) == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        second = get(&file, Some(&demo)).await;
    }
    assert_eq!(cache_status(&second), "HIT");
    assert_eq!(second.bytes().await.unwrap(), data);

    // Another project's member gets Glance's answer, though the image is cached.
    let refused = get(&file, Some(&other)).await;
    assert_eq!(
        refused.status(),
        404,
        "Glance hides another project's private image"
    );
    let body = refused.bytes().await.unwrap();
    assert!(
        body.len() < 4096 && !body.windows(64).any(|w| w == &data[..64]),
        "no image bytes"
    );
    assert_eq!(get(&file, None).await.status(), 401);

    // Management: the admin role, checked with Keystone.
    let listing = format!("{}/v2/cache", node.url);
    assert_eq!(get(&listing, Some(&admin)).await.status(), 200);
    let member = get(&listing, Some(&demo)).await;
    assert_eq!(member.status(), 403);
    let reason = member.text().await.unwrap();
    assert!(
        reason.contains("You are not authorized to complete cache_list action."),
        "{reason}"
    );
    // A 401 as Glance's: keystonemiddleware's challenge and words; the node's log says why.
    let anonymous = get(&listing, None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        format!("Keystone uri=\"{}\"", glance.keystone.url).as_str()
    );
    assert!(anonymous
        .text()
        .await
        .unwrap()
        .contains("This server could not verify that you are authorized"));
    let log = std::fs::read_to_string(node.dir.path().join("server.log")).unwrap();
    assert!(log.contains("no token was given"), "{log}");
    assert_eq!(
        get(&listing, Some("gAAAAABnot-a-token")).await.status(),
        401
    );
}

/// Glance 33's own API node (its default driver is centralized_db) and a cache node configured
/// with Glance's database share one fleet view: each lists the other as holding the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_node_and_glance_share_one_fleet_in_glances_database() {
    let test = "a_cache_node_and_glance_share_one_fleet_in_glances_database";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let data = vec![9u8; 256 * 1024];
    let id = create_image(&glance.url, &admin, &data).await;
    // Glance caches it on download (flavor keystone+cachemanagement), in its own tables.
    let through_glance = get(&format!("{}/v2/images/{id}/file", glance.url), Some(&admin)).await;
    assert_eq!(through_glance.bytes().await.unwrap(), data);

    let port = openstack::free_port();
    let node_url = format!("http://127.0.0.1:{port}");
    let more = format!(
        "\n[DEFAULT]\nimage_cache_driver = centralized_db\nworker_self_reference_url = {node_url}\n\n\
         [database]\nconnection = sqlite:///{}\n",
        glance.dir.join("glance.db").display()
    );
    let node = start_node_configured(&glance.url, keystone, &more, port, &[]);
    assert_eq!(node.url, node_url);
    let first = get(&format!("{}/v2/images/{id}/file", node.url), Some(&admin)).await;
    assert_eq!(first.bytes().await.unwrap(), data);
    wait_cached(&node, &admin, &id, Duration::from_secs(10)).await;

    let mut expected = vec![glance.url.clone(), node_url.clone()];
    expected.sort();
    for asked in [&glance.url, &node.url] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let response = get(&format!("{asked}/v2/cache/nodes/{id}"), Some(&admin)).await;
            let status = response.status();
            let text = response.text().await.unwrap();
            let listed: Option<Vec<String>> = serde_json::from_str(&text).ok();
            if let Some(mut listed) = listed.filter(|_| status == 200) {
                listed.sort();
                if listed == expected {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{asked} answered {status}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetcher_fetches_as_its_own_keystone_identity_also_after_its_token_expired() {
    let test = "the_prefetcher_fetches_as_its_own_keystone_identity_also_after_its_token_expired";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    let node = start_node(glance, 0);
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let data = vec![7u8; 512 * 1024];
    let first = create_image(&glance.url, &demo, &data).await;
    let queue = |id: String| {
        let (url, admin) = (node.url.clone(), admin.clone());
        async move {
            reqwest::Client::new()
                .put(format!("{url}/v2/cache/{id}"))
                .header("x-auth-token", &admin)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let started = Instant::now();
    assert_eq!(queue(first.clone()).await, 202);
    wait_cached(&node, &admin, &first, Duration::from_secs(30)).await;

    // The test Keystone's tokens live 60 s: past that, the node's first token is gone, and it
    // must have logged in again to check and fetch the next image.
    tokio::time::sleep(Duration::from_secs(62).saturating_sub(started.elapsed())).await;
    // The caller's first token has expired too: the node (which checked it within the last
    // minute) no longer takes it.
    let expired = get(&format!("{}/v2/cache", node.url), Some(&admin)).await;
    assert_eq!(expired.status(), 401);
    assert!(expired.headers().contains_key("www-authenticate"));
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let second = create_image(&glance.url, &demo, &data).await;
    let status = reqwest::Client::new()
        .put(format!("{}/v2/cache/{second}", node.url))
        .header("x-auth-token", &admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    wait_cached(&node, &admin, &second, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_tools_log_in_as_the_nodes_identity_and_an_unreachable_keystone_is_a_503() {
    let test = "the_cron_tools_log_in_as_the_nodes_identity_and_an_unreachable_keystone_is_a_503";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let node = start_node(glance, 0);
    let port = node.url.rsplit(':').next().unwrap().to_owned();
    let config = node.dir.path().join("glance-api.conf");
    // No OS_AUTH_TOKEN: the [keystone_authtoken] identity (the glance user, role admin) logs in.
    for (tool, said) in [
        (
            env!("CARGO_BIN_EXE_image-cache-prefetcher"),
            "asked the server to fetch its 0 queued images",
        ),
        (
            env!("CARGO_BIN_EXE_image-cache-pruner"),
            "pruned 0 images, 0 bytes",
        ),
        (
            env!("CARGO_BIN_EXE_image-cache-cleaner"),
            "cleaned 0 invalid and 0 stalled files",
        ),
    ] {
        let mut command = Command::new(tool);
        command
            .arg("--config-file")
            .arg(&config)
            .args(["-p", &port])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap());
        let (ok, text) = tokio::task::block_in_place(|| openstack::run_output(&mut command));
        assert!(ok && text.contains(said), "{tool}: {text}");
        assert!(text.contains("through the server"), "{tool}: {text}");
    }

    // A node whose Keystone cannot be reached refuses management with a 503 saying so, and
    // lets nothing through unchecked; downloads still go to Glance, which checks them itself.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}/v3", closed.local_addr().unwrap());
    drop(closed);
    let cut_off = start_node_configured(&glance.url, &nowhere, "", 0, &[]);
    let admin = log_in(&glance.keystone.url, "admin", ADMIN_PASSWORD, "admin").await;
    let refused = get(&format!("{}/v2/cache", cut_off.url), Some(&admin)).await;
    assert_eq!(refused.status(), 503);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("cannot be checked now"), "{reason}");
    // The caller is not shown where the node's Keystone is; the metric and the log say it.
    assert!(!reason.contains(&nowhere), "{reason}");
    let metrics = get(&format!("{}/metrics", cut_off.url), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        common::metric(
            &metrics,
            "image_cache_keystone_failures_total{check=\"token_validation\"}"
        ) >= 1,
        "{metrics}"
    );
    let demo = log_in(&glance.keystone.url, "demo", DEMO_PASSWORD, "demo").await;
    let id = create_image(&glance.url, &demo, b"still served").await;
    let download = get(&format!("{}/v2/images/{id}/file", cut_off.url), Some(&demo)).await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap(), &b"still served"[..]);
}

/// An admin-openrc's variables, for Keystone at `keystone`.
fn admin_openrc(keystone: &str) -> [(&'static str, &str); 4] {
    [
        ("OS_AUTH_URL", keystone),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", ADMIN_PASSWORD),
        ("OS_PROJECT_NAME", "admin"),
    ]
}

fn manage(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"));
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    openstack::run_output(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_cache_manage_with_an_openrc_or_clouds_yaml_finds_the_node_in_the_catalog() {
    let test = "image_cache_manage_with_an_openrc_or_clouds_yaml_finds_the_node_in_the_catalog";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    // The node is registered as the cloud's image endpoint, as the operator guide says.
    // It names itself in its answers (worker_self_reference_url), so the tool knows the
    // catalog's endpoint is this one node and not a load balancer.
    let port = openstack::free_port();
    let itself = format!("[DEFAULT]\nworker_self_reference_url = http://127.0.0.1:{port}\n");
    let node = start_node_configured(&glance.url, keystone, &itself, port, &[]);
    openstack::register_image_endpoint(keystone, &node.url, "RegionOne").await;
    // In another region, the same node under another name: as a load balancer's address would,
    // it reaches a node that is not the endpoint itself.
    let region = format!("Region-{port}");
    let aliased = format!("http://localhost:{port}");
    openstack::register_image_endpoint(keystone, &aliased, &region).await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let id = create_image(&node.url, &demo, b"cached through the catalog").await;
    assert_eq!(
        get(&format!("{}/v2/images/{id}/file", node.url), Some(&demo))
            .await
            .status(),
        200
    );

    let openrc = [
        ("OS_AUTH_URL", keystone.as_str()),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", ADMIN_PASSWORD),
        ("OS_PROJECT_NAME", "admin"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ("OS_REGION_NAME", "RegionOne"),
        ("OS_INTERFACE", "public"),
    ];
    let cwd = tempfile::tempdir().unwrap();
    let mut listed = false;
    for _ in 0..50 {
        let (ok, text) = manage(&["list-cached"], &openrc, cwd.path());
        assert!(ok, "{text}");
        if text.contains(&id) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the openrc user lists the node's cache");

    // The catalog's endpoint that is not one node is refused, saying what to do instead.
    let mut elsewhere = openrc;
    elsewhere[6] = ("OS_REGION_NAME", region.as_str());
    let (ok, text) = manage(&["list-cached"], &elsewhere, cwd.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("the catalog's image endpoint {aliased} is not one cache node (node http://127.0.0.1:{port} answered there)")),
        "{text}"
    );
    assert!(text.contains("Give each node with -H"), "{text}");
    // With -H the same identity manages the node.
    let host = format!("127.0.0.1:{port}");
    let (ok, text) = manage(&["-H", &host, "list-cached"], &elsewhere, cwd.path());
    assert!(ok && text.contains(&id), "{text}");

    // A member's openrc: refused with the reason.
    let member = [
        ("OS_AUTH_URL", keystone.as_str()),
        ("OS_USERNAME", "demo"),
        ("OS_PASSWORD", DEMO_PASSWORD),
        ("OS_PROJECT_NAME", "demo"),
    ];
    let (ok, text) = manage(&["list-cached"], &member, cwd.path());
    assert!(!ok);
    assert!(
        text.contains("Not authorized to make this request."),
        "{text}"
    );

    // A wrong password: a sentence naming the user and Keystone.
    let mut wrong = openrc;
    wrong[2] = ("OS_PASSWORD", "not-it");
    let (ok, text) = manage(&["list-cached"], &wrong, cwd.path());
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "Keystone at {keystone} refused the login of user admin in domain Default"
        )),
        "{text}"
    );
    assert!(!text.contains("not-it"), "{text}");

    // clouds.yaml in the current directory, --os-cloud.
    std::fs::write(
        cwd.path().join("clouds.yaml"),
        format!(
            "clouds:\n  lab:\n    auth:\n      auth_url: {keystone}\n      username: admin\n\
             \x20     password: {ADMIN_PASSWORD}\n      project_name: admin\n\
             \x20     user_domain_name: Default\n      project_domain_name: Default\n\
             \x20   region_name: RegionOne\n"
        ),
    )
    .unwrap();
    let (ok, text) = manage(&["--os-cloud", "lab", "list-cached"], &[], cwd.path());
    assert!(ok, "{text}");
    assert!(text.contains(&id), "{text}");
    let (ok, text) = manage(&["--os-cloud", "prod", "list-cached"], &[], cwd.path());
    assert!(!ok);
    assert!(
        text.contains("has no cloud named \"prod\" (it has: lab)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_front_of_a_stock_uwsgi_glance_200_mixed_requests_all_succeed() {
    let test = "in_front_of_a_stock_uwsgi_glance_200_mixed_requests_all_succeed";
    let Some(shared) = Glance::shared(test) else {
        return;
    };
    let venv = openstack::venv(test).unwrap();
    // Glance's own uWSGI configuration: it closes each connection without saying so.
    let glance = Glance::start(&venv, shared.keystone, "stock");
    let node = start_node(&glance, 0);
    let keystone = &glance.keystone.url;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let http = reqwest::Client::new();
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 241) as u8).collect();
    let mut images = vec![create_image(&node.url, &demo, &data).await];
    let mut failures = Vec::new();
    for i in 0..200 {
        let id = images[i % images.len()].clone();
        let (what, url, token) = match i % 5 {
            0 => ("metadata", format!("{}/v2/images/{id}", node.url), &demo),
            1 | 2 => (
                "download",
                format!("{}/v2/images/{id}/file", node.url),
                &demo,
            ),
            3 => ("listing", format!("{}/v2/images", node.url), &demo),
            _ => ("cache listing", format!("{}/v2/cache", node.url), &admin),
        };
        if i % 40 == 39 {
            images.push(create_image(&node.url, &demo, &data).await);
        }
        match http.get(&url).header("x-auth-token", token).send().await {
            Ok(response) if response.status() == 200 => {
                let body = response.bytes().await.unwrap();
                if what == "download" && body != data {
                    failures.push(format!("{i} {what}: {} bytes, not the image", body.len()));
                }
            }
            Ok(response) => failures.push(format!(
                "{i} {what}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            )),
            Err(err) => failures.push(format!("{i} {what}: {err}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 failed: {failures:#?}",
        failures.len()
    );

    // The versions document and Location name the node, not Glance, and the node's own answers
    // carry a request id.
    let versions = http.get(format!("{}/", node.url)).send().await.unwrap();
    assert!(versions.headers().contains_key("x-openstack-request-id"));
    let text = versions.text().await.unwrap();
    assert!(text.contains(&format!("{}/v2/", node.url)), "{text}");
    assert!(!text.contains(&glance.url), "{text}");
    let own = http
        .get(format!("{}/v2/cache", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 401);
    let id = own.headers()["x-openstack-request-id"].to_str().unwrap();
    assert!(id.starts_with("req-") && id.len() == 40, "{id}");
}

/// HTTPS in front of `target` (`http://127.0.0.1:PORT`), as a TLS-terminating load balancer in
/// front of Glance or Keystone would be: each connection decrypted and piped on. Its URL.
async fn tls_front(target: &str, cert: &Path, key: &Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = format!("https://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to pipe.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut backend) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
                }
            });
        }
    });
    front
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glance_and_keystone_over_https_with_a_private_ca() {
    let test = "glance_and_keystone_over_https_with_a_private_ca";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::test_ca(certs.path());
    let glance_https = tls_front(&glance.url, &cert, &key).await;
    let keystone_http = glance.keystone.url.trim_end_matches("/v3");
    let keystone_https = format!("{}/v3", tls_front(keystone_http, &cert, &key).await);
    let trusted = format!(
        "cafile = {ca}\n\n[cache_server]\nupstream_cafile = {ca}\n",
        ca = ca.display()
    );
    let node = start_node_configured(&glance_https, &keystone_https, &trusted, 0, &[]);

    // A member's download: the node asks Glance over HTTPS, with the member's token.
    let demo = log_in(&glance.keystone.url, "demo", DEMO_PASSWORD, "demo").await;
    let data = vec![7u8; 300_000];
    let id = create_image(&glance.url, &demo, &data).await;
    let url = format!("{}/v2/images/{id}/file", node.url);
    let miss = get(&url, Some(&demo)).await;
    let (status, cached) = (miss.status(), cache_status(&miss));
    let body = miss.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(cached, "MISS");
    assert_eq!(body, data);
    let admin = log_in(&glance.keystone.url, "admin", ADMIN_PASSWORD, "admin").await;
    wait_cached(&node, &admin, &id, Duration::from_secs(30)).await;
    let hit = get(&url, Some(&demo)).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);

    // The prefetcher logs in to Keystone over HTTPS and fetches from Glance over HTTPS.
    let queued = create_image(&glance.url, &demo, b"prefetched over https").await;
    let response = reqwest::Client::new()
        .put(format!("{}/v2/cache/{queued}", node.url))
        .header("x-auth-token", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_cached(&node, &admin, &queued, Duration::from_secs(30)).await;

    // The tools log in to Keystone over HTTPS with the CA, and refuse it without.
    let openrc = admin_openrc(&keystone_https);
    let cwd = tempfile::tempdir().unwrap();
    let ca_text = ca.to_str().unwrap();
    let (ok, text) = manage(
        &["-H", &node.url, "--os-cacert", ca_text, "list-cached"],
        &openrc,
        cwd.path(),
    );
    assert!(ok && text.contains(&queued), "{text}");
    let (ok, text) = manage(&["-H", &node.url, "list-cached"], &openrc, cwd.path());
    assert!(!ok, "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // A node that does not trust the CA cannot reach Glance, and says why; with
    // upstream_insecure it can.
    let untrusting = start_node_configured(&glance_https, &glance.keystone.url, "", 0, &[]);
    let refused = get(&format!("{}/v2/images/{id}", untrusting.url), Some(&demo)).await;
    assert_eq!(refused.status(), 502);
    let reason = refused.text().await.unwrap();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    let insecure = start_node_configured(
        &glance_https,
        &glance.keystone.url,
        "\n[cache_server]\nupstream_insecure = true\n",
        0,
        &[],
    );
    let answered = get(&format!("{}/v2/images/{id}", insecure.url), Some(&demo)).await;
    assert_eq!(answered.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_with_a_private_ca_the_tools_verify_the_node() {
    let test = "over_https_with_a_private_ca_the_tools_verify_the_node";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::test_ca(certs.path());
    let node = start_node_with(
        glance,
        0,
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let openrc = admin_openrc(keystone);
    let cwd = tempfile::tempdir().unwrap();
    let ca_text = ca.to_str().unwrap();
    let (ok, text) = manage(
        &["-H", &node.url, "--os-cacert", ca_text, "list-cached"],
        &openrc,
        cwd.path(),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("Found 0 cached images") || text.contains("No cached images"),
        "{text}"
    );

    // Without the CA, the node's certificate is refused; --insecure is the explicit way around.
    let (ok, text) = manage(&["-H", &node.url, "list-cached"], &openrc, cwd.path());
    assert!(!ok);
    assert!(
        text.contains(&format!("host {} is unreachable", node.url)),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    let (ok, text) = manage(
        &["-H", &node.url, "--insecure", "list-cached"],
        &openrc,
        cwd.path(),
    );
    assert!(ok, "{text}");

    // OS_CACERT works as the flag does; a missing CA file is named.
    let mut with_ca = openrc.to_vec();
    with_ca.push(("OS_CACERT", ca_text));
    let (ok, text) = manage(&["-H", &node.url, "list-cached"], &with_ca, cwd.path());
    assert!(ok, "{text}");
    let (ok, text) = manage(
        &[
            "-H",
            &node.url,
            "--os-cacert",
            "/nonexistent/ca.pem",
            "list-cached",
        ],
        &openrc,
        cwd.path(),
    );
    assert!(!ok);
    assert!(
        text.contains("the CA file /nonexistent/ca.pem cannot be read"),
        "{text}"
    );
}

/// `glance ARGS` (python-glanceclient from the test venv) as `user`, with the image API at
/// `image_url`.
fn glance_cli(
    venv: &Path,
    keystone: &str,
    user: (&str, &str, &str),
    image_url: &str,
    args: &[&str],
    cwd: &Path,
) -> (bool, String) {
    let mut command = Command::new(venv.join("bin/glance"));
    command
        .args(["--os-image-url", image_url])
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("OS_AUTH_URL", keystone)
        .env("OS_USERNAME", user.0)
        .env("OS_PASSWORD", user.1)
        .env("OS_PROJECT_NAME", user.2)
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default");
    openstack::run_output(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unchanged_glance_client_downloads_and_lists_the_cache_through_the_node() {
    let test = "the_unchanged_glance_client_downloads_and_lists_the_cache_through_the_node";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let venv = openstack::venv(test).unwrap();
    let keystone = &glance.keystone.url;
    let node = start_node(glance, 0);
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let id = create_image(&node.url, &demo, &data).await;
    let cwd = tempfile::tempdir().unwrap();
    let demo_user = ("demo", DEMO_PASSWORD, "demo");
    for round in ["miss", "hit"] {
        let out = cwd.path().join(format!("{round}.img"));
        let (ok, text) = tokio::task::block_in_place(|| {
            glance_cli(
                &venv,
                keystone,
                demo_user,
                &node.url,
                &["image-download", &id, "--file", out.to_str().unwrap()],
                cwd.path(),
            )
        });
        assert!(ok, "{round}: {text}");
        assert_eq!(std::fs::read(&out).unwrap(), data, "{round}");
    }
    let admin_user = ("admin", ADMIN_PASSWORD, "admin");
    let (ok, text) = tokio::task::block_in_place(|| {
        glance_cli(
            &venv,
            keystone,
            admin_user,
            &node.url,
            &["cache-list"],
            cwd.path(),
        )
    });
    assert!(ok, "{text}");
    assert!(text.contains(&id), "{text}");
    let (ok, text) = tokio::task::block_in_place(|| {
        glance_cli(
            &venv,
            keystone,
            demo_user,
            &node.url,
            &["cache-list"],
            cwd.path(),
        )
    });
    assert!(!ok, "a member may not list the cache: {text}");
    assert!(
        text.contains("HTTP 403 Forbidden: You are not authorized to complete cache_list action."),
        "{text}"
    );
}

/// What python-glanceclient prints of an error page (its `exc.from_response` for HTML): the
/// lines without tags, blanks and repeats, joined with ": ".
fn glanceclient_details(page: &str) -> String {
    let mut seen = Vec::new();
    for line in page.lines() {
        let mut text = String::new();
        let mut in_tag = false;
        for c in line.trim().chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        if !text.is_empty() && !seen.contains(&text) {
            seen.push(text);
        }
    }
    seen.join(": ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_answers_are_glances_status_and_words() {
    let test = "management_answers_are_glances_status_and_words";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    let node = start_node(glance, 0);
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let existing = create_image(&glance.url, &admin, b"not cached anywhere").await;
    let http = reqwest::Client::new();
    let inactive = openstack::create_image_record(&glance.url, &admin).await;
    let unknown = "6f0e8d4c-3b2a-4c1d-9e8f-7a6b5c4d3e2f";
    // What is asked ("METHOD /path"), as whom, with which clear target.
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("no token",                       "GET /v2/cache".into(),                 "",                        None),
        ("a token Keystone never issued",  "GET /v2/cache".into(),                 "gAAAAABnot-a-real-token", None),
        ("a member lists",                 "GET /v2/cache".into(),                 &demo,                     None),
        ("a bad clear target",             "DELETE /v2/cache".into(),              &admin,                    Some("bogus")),
        ("a wrong method",                 "POST /v2/cache".into(),                &admin,                    None),
        ("queue an unknown image",         format!("PUT /v2/cache/{unknown}"),     &admin,                    None),
        ("queue an image without data",    format!("PUT /v2/cache/{inactive}"),    &admin,                    None),
        ("delete an image cached nowhere", format!("DELETE /v2/cache/{existing}"), &admin,                    None),
        ("delete an unknown image",        format!("DELETE /v2/cache/{unknown}"),  &admin,                    None),
    ];
    for (what, asked, token, target) in cases {
        let (method, path) = asked.split_once(' ').unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut answers = Vec::new();
        for base in [&glance.url, &node.url] {
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            if !token.is_empty() {
                request = request.header("x-auth-token", token);
            }
            if let Some(target) = target {
                request = request.header("x-image-cache-clear-target", target);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let allow = (header("allow"), header("www-authenticate"));
            // Glance also labels its empty 204s text/html (webob's default); nothing reads that.
            let kind = response
                .headers()
                .get("content-type")
                .filter(|_| status != 204)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            // (Listings are not compared: Glance's own cache fills too, with what passes through it.)
            let shown = if status.is_success() {
                body
            } else {
                glanceclient_details(&body)
            };
            answers.push((status, allow, kind, shown));
        }
        assert_eq!(answers[0], answers[1], "{what}: Glance, then the node");
    }
}

/// Glance's default policy lets a `reader` see an image's metadata and refuses it the data:
/// through the node it gets Glance's 403 for a cached image as for an uncached one, with every
/// form of download; a `member` of the project gets the HIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_glances_403_for_a_cached_image_as_for_an_uncached_one() {
    let test = "a_reader_gets_glances_403_for_a_cached_image_as_for_an_uncached_one";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let node = start_node(glance, 0);
    let keystone = &glance.keystone.url;
    let member = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let reader = log_in(keystone, "viewer", openstack::READER_PASSWORD, "demo").await;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let data = vec![9u8; 200_000];
    let cached = create_image(&glance.url, &member, &data).await;
    let uncached = create_image(&glance.url, &member, &data).await;
    let url = |base: &str, id: &str| format!("{base}/v2/images/{id}/file");
    let miss = get(&url(&node.url, &cached), Some(&member)).await;
    assert_eq!(miss.status(), 200);
    assert_eq!(miss.bytes().await.unwrap(), data);
    wait_cached(&node, &admin, &cached, Duration::from_secs(30)).await;
    let hit = get(&url(&node.url, &cached), Some(&member)).await;
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit.bytes().await.unwrap(), data);
    let metadata = get(&format!("{}/v2/images/{cached}", node.url), Some(&reader)).await;
    assert_eq!(metadata.status(), 200, "a reader sees the metadata");

    let client = reqwest::Client::new();
    let forms: [(&str, Option<(&str, &str)>); 4] = [
        ("GET", None),
        ("HEAD", None),
        ("GET", Some(("range", "bytes=0-99"))),
        ("GET", Some(("if-none-match", "\"x\""))),
    ];
    for (method, header) in forms {
        let ask = |base: String, id: String| {
            let client = client.clone();
            let reader = reader.clone();
            async move {
                let mut request = client
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        url(&base, &id),
                    )
                    .header("x-auth-token", reader);
                if let Some((name, value)) = header {
                    request = request.header(name, value);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let marked = response.headers().contains_key("x-cache-status");
                (status, marked, response.bytes().await.unwrap().len())
            }
        };
        let from_glance = ask(glance.url.clone(), cached.clone()).await;
        // Glance answers a HEAD of the data 405, every GET form 403; the node answers its
        // download decision (the 403) to all, cached or not.
        let refused = if method == "HEAD" { 405 } else { 403 };
        assert_eq!(
            from_glance.0, refused,
            "Glance refuses a reader the data ({method} {header:?})"
        );
        let of_cached = ask(node.url.clone(), cached.clone()).await;
        let of_uncached = ask(node.url.clone(), uncached.clone()).await;
        assert_eq!(of_cached, of_uncached, "{method} {header:?}");
        // The node's answer is Glance's download decision (its 403), cached or not.
        assert_eq!(of_cached.0, 403, "{method} {header:?}: {of_cached:?}");
        assert!(
            !of_cached.1,
            "a refusal names the cache ({method} {header:?})"
        );
    }
}

/// Glance's uWSGI worker dies in the middle of a 256 MiB download through the node; its master
/// starts another. The node resumes the fill with Range: the client receives the whole image,
/// which verifies and is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glance_restarting_mid_download_costs_the_client_nothing() {
    let test = "glance_restarting_mid_download_costs_the_client_nothing";
    let (Some(venv), Some(keystone)) = (openstack::venv(test), openstack::Keystone::shared(test))
    else {
        return;
    };
    let glance = Glance::start(&venv, keystone, "close");
    // Glance's worker takes seconds to load: room for the attempts' backoff (0.25 s doubling).
    let node = start_node_configured(
        &glance.url,
        &keystone.url,
        "[cache_server]\nupstream_resume_attempts = 8\n",
        0,
        &[],
    );
    let member = log_in(&keystone.url, "demo", DEMO_PASSWORD, "demo").await;
    let admin = log_in(&keystone.url, "admin", ADMIN_PASSWORD, "admin").await;
    let data: Vec<u8> = (0..256 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let id = create_image(&glance.url, &member, &data).await;

    let url = format!("{}/v2/images/{id}/file", node.url);
    let download = {
        let member = member.clone();
        tokio::spawn(async move {
            let response = get(&url, Some(&member)).await;
            assert_eq!(response.status(), 200);
            assert_eq!(cache_status(&response), "MISS");
            response.bytes().await
        })
    };
    // Once a fifth of the image is in, the worker serving it dies.
    let partial = node.dir.path().join("cache").join("incomplete").join(&id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = std::fs::metadata(&partial).map_or(0, |m| m.len());
        if len > data.len() as u64 / 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the fill did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let port = glance.url.rsplit(':').next().unwrap().to_owned();
    let pids = Command::new("pgrep")
        .args(["-f", &format!("http-socket 127.0.0.1:{port}")])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let parent = |pid: u32| -> u32 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let workers: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| pids.contains(&parent(*p)))
        .collect();
    assert!(!workers.is_empty(), "no uWSGI worker among {pids:?}");
    for worker in &workers {
        Command::new("kill")
            .args(["-KILL", &worker.to_string()])
            .status()
            .unwrap();
    }
    let cut_at = std::fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(
        cut_at < data.len() as u64,
        "the download was over before the cut"
    );

    let body = tokio::time::timeout(Duration::from_secs(180), download)
        .await
        .expect("the download finished")
        .unwrap()
        .expect("the client never sees the cut");
    assert!(body == data, "the whole image, byte for byte");
    wait_cached(&node, &admin, &id, Duration::from_secs(60)).await;
    assert!(std::fs::read(node.dir.path().join("cache").join(&id)).unwrap() == data);
    let metrics = get(&format!("{}/metrics", node.url), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("image_cache_fill_resumes_total{answer=\"partial\"}"),
        "{metrics}"
    );
    let log = std::fs::read_to_string(node.dir.path().join("server.log")).unwrap();
    assert!(log.contains("asking again from the byte reached"), "{log}");
}
