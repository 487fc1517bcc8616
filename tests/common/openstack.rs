//! Real OpenStack services for the tests: Keystone (and Glance) from PyPI, installed by
//! `tests/openstack/install.sh` into a cached venv and run under uWSGI on 127.0.0.1.
//!
//! Where Python 3.11 is missing the tests print `SKIPPED: <why>` and pass, unless `CI` is set.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const DEMO_PASSWORD: &str = "demo-secret";
pub const OTHER_PASSWORD: &str = "other-secret";
/// The password of `viewer`: role reader (only) in project demo.
pub const READER_PASSWORD: &str = "reader-secret";

fn scripts() -> PathBuf {
    // The workspace's root: these helpers serve the library's tests and the server crate's.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tests/openstack"))
        .find(|scripts| scripts.is_dir())
        .expect("tests/openstack is in the workspace's root")
}

/// The venv with Keystone and Glance, installed on first use; `None` (after printing why) where
/// Python 3.11 is missing and `CI` is not set.
pub fn venv(test: &str) -> Option<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let started = Instant::now();
        let output = Command::new(scripts().join("install.sh"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|err| format!("cannot run tests/openstack/install.sh: {err}"))?;
        match output.status.code() {
            Some(0) => {
                let path = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_owned();
                eprintln!(
                    "OpenStack venv ready in {:.1} s: {path}",
                    started.elapsed().as_secs_f64()
                );
                Ok(PathBuf::from(path))
            }
            Some(3) => {
                Err("Python 3.11 is not installed (Keystone 30 and Glance 33 need it)".into())
            }
            _ => panic!("tests/openstack/install.sh failed: {}", output.status),
        }
    });
    match venv {
        Ok(path) => Some(path.clone()),
        Err(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}, and CI is set"),
        Err(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// A free port on 127.0.0.1 (free when asked; Keystone's catalog needs it before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tests/openstack/<script> VENV DIR PORT ARGS...` in a directory of its own (removed
/// when the script ends) on a free port, and waits for its "ready".
fn run_script(
    script: &str,
    venv: &Path,
    args: impl FnOnce(u16) -> Vec<String>,
) -> (Child, u16, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(script.trim_end_matches(".sh"))
        .tempdir()
        .unwrap()
        .keep();
    let port = free_port();
    let mut child = Command::new(scripts().join(script))
        .arg(venv)
        .arg(&dir)
        .args(args(port))
        .env("REMOVE_DIR_AT_EXIT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "{script} did not start; see {}",
        dir.display()
    );
    (child, port, dir)
}

/// A running Keystone with its users: `admin` (role admin in project admin), `demo` (role
/// member in project demo), `viewer` (role reader in project demo), `other` (role member in
/// project other), `glance` (roles admin and service in project service).
pub struct Keystone {
    pub url: String,
    pub admin_app_cred: (String, String),
    _child: Child,
}

impl Keystone {
    /// The test binary's Keystone, started once, with tokens that live 60 s (so a test can run
    /// past an expiry); `None` where the tests are skipped.
    pub fn shared(test: &str) -> Option<&'static Keystone> {
        static KEYSTONE: OnceLock<Option<Keystone>> = OnceLock::new();
        KEYSTONE
            .get_or_init(|| venv(test).map(|venv| Keystone::start(&venv, 60)))
            .as_ref()
    }

    fn start(venv: &Path, expiration: u64) -> Keystone {
        let started = Instant::now();
        let (child, port, _) = run_script("keystone.sh", venv, |port| {
            vec![port.to_string(), expiration.to_string()]
        });
        let url = format!("http://127.0.0.1:{port}/v3");
        // On a thread of its own: the caller may be inside a runtime already.
        let admin_app_cred = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(populate(&url))
                })
                .join()
                .unwrap()
        });
        eprintln!(
            "Keystone ready at {url} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Keystone {
            url,
            admin_app_cred,
            _child: child,
        }
    }
}

/// Logs `user` in to `project` (both in the default domain); the token.
pub async fn log_in(url: &str, user: &str, password: &str, project: &str) -> String {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
    // Keystone's uWSGI has closed a connection without answering under CI's load (once, at the
    // start of the cloud tests): a login that got no answer at all is tried again.
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        match reqwest::Client::new()
            .post(format!("{url}/auth/tokens"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => break response,
            Err(err) if attempt < 5 => {
                eprintln!("logging {user} in got no answer ({err}); trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => panic!("{user} could not log in: Keystone at {url} did not answer: {err}"),
        }
    };
    assert_eq!(response.status(), 201, "{user} could not log in");
    response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Keystone's API at `url` called with `token`: the answer's status and its JSON body (null
/// when there is none).
pub async fn keystone_call(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .header("x-auth-token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (
        status,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Creates the demo and glance users and their projects, and an application credential of the
/// admin's; returns that credential's id and secret.
async fn populate(url: &str) -> (String, String) {
    let token = log_in(url, "admin", ADMIN_PASSWORD, "admin").await;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let token = &token;
        async move {
            let (status, answer) = keystone_call(url, token, method, &path, body).await;
            assert!(status.is_success(), "{path}: {status}");
            answer
        }
    };
    use reqwest::Method;
    let id_of = |v: &Value, kind: &str| v[kind]["id"].as_str().unwrap().to_owned();
    let role = |name: &'static str| {
        let call = &call;
        async move {
            let found = call(Method::GET, format!("/roles?name={name}"), None).await;
            match found["roles"].as_array().and_then(|r| r.first()) {
                Some(role) => role["id"].as_str().unwrap().to_owned(),
                None => id_of(
                    &call(
                        Method::POST,
                        "/roles".into(),
                        Some(json!({"role": {"name": name}})),
                    )
                    .await,
                    "role",
                ),
            }
        }
    };
    let (member, admin, service, reader) = (
        role("member").await,
        role("admin").await,
        role("service").await,
        role("reader").await,
    );
    let mut projects = std::collections::HashMap::new();
    for (user, password, project, roles) in [
        ("demo", DEMO_PASSWORD, "demo", vec![member.clone()]),
        ("other", OTHER_PASSWORD, "other", vec![member.clone()]),
        (
            "glance",
            "glance-secret",
            "service",
            vec![admin.clone(), service.clone()],
        ),
    ] {
        let name = project;
        let project = id_of(
            &call(
                Method::POST,
                "/projects".into(),
                Some(json!({"project": {"name": project, "domain_id": "default"}})),
            )
            .await,
            "project",
        );
        projects.insert(name, project.clone());
        let user = id_of(
            &call(Method::POST, "/users".into(), Some(json!({"user": {"name": user, "password": password, "domain_id": "default", "default_project_id": project}}))).await,
            "user",
        );
        for role in roles {
            call(
                Method::PUT,
                format!("/projects/{project}/users/{user}/roles/{role}"),
                None,
            )
            .await;
        }
    }
    // A reader of project demo: sees its images' metadata, is refused their data by Glance's
    // default download_image rule.
    let demo = &projects["demo"];
    let viewer = id_of(
        &call(Method::POST, "/users".into(), Some(json!({"user": {"name": "viewer", "password": READER_PASSWORD, "domain_id": "default", "default_project_id": demo}}))).await,
        "user",
    );
    call(
        Method::PUT,
        format!("/projects/{demo}/users/{viewer}/roles/{reader}"),
        None,
    )
    .await;
    let admin_id = {
        let response = reqwest::Client::new()
            .get(format!("{url}/auth/tokens"))
            .header("x-auth-token", &token)
            .header("x-subject-token", &token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        response["token"]["user"]["id"].as_str().unwrap().to_owned()
    };
    let credential = call(
        Method::POST,
        format!("/users/{admin_id}/application_credentials"),
        Some(json!({"application_credential": {"name": "cache-tests"}})),
    )
    .await;
    (
        credential["application_credential"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        credential["application_credential"]["secret"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// A running Glance behind the shared Keystone (flavor keystone+cachemanagement).
pub struct Glance {
    pub url: String,
    pub keystone: &'static Keystone,
    /// Its working directory: `glance-api.conf`, `glance.db` (its SQLite database), logs.
    pub dir: PathBuf,
    _child: Child,
}

impl Glance {
    /// The test binary's Glance, with `Connection: close` added to its answers (as Python
    /// clients talking to it directly need); `None` where the tests are skipped.
    pub fn shared(test: &str) -> Option<&'static Glance> {
        static GLANCE: OnceLock<Option<Glance>> = OnceLock::new();
        GLANCE
            .get_or_init(|| {
                let keystone = Keystone::shared(test)?;
                Some(Glance::start(&venv(test)?, keystone, "close"))
            })
            .as_ref()
    }

    /// A Glance of its own, under its stock uWSGI configuration (`mode` "stock") or with
    /// `Connection: close` ("close").
    pub fn start(venv: &Path, keystone: &'static Keystone, mode: &str) -> Glance {
        let started = Instant::now();
        let (child, port, dir) = run_script("glance.sh", venv, |port| {
            vec![port.to_string(), keystone.url.clone(), mode.to_owned()]
        });
        let url = format!("http://127.0.0.1:{port}");
        eprintln!(
            "Glance ({mode}) ready at {url} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Glance {
            url,
            keystone,
            dir,
            _child: child,
        }
    }
}

impl Drop for Glance {
    fn drop(&mut self) {
        // The script stops its uWSGI on SIGTERM.
        let _ = Command::new("kill")
            .arg(self._child.id().to_string())
            .status();
        let _ = self._child.wait();
    }
}

/// Creates an image as `token`'s project (private) through `api` and uploads `data`; its id.
///
/// Glance on SQLite answers 500 ("database is locked") to an upload while another process
/// writes its database (a test's node with `centralized_db` on Glance's own file): such an
/// upload is made again, on a new image, up to three times.
pub async fn create_image(api: &str, token: &str, data: &[u8]) -> String {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = create_image_record(api, token).await;
        let client = reqwest::Client::new();
        let uploaded = super::example::put_image_data(&client, api, token, &id, data).await;
        let status = uploaded.status();
        if status == 500 && attempt < 3 {
            let said = uploaded.text().await.unwrap_or_default();
            eprintln!("Glance answered 500 to the upload of {id} ({said}); a new image");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(status, 204, "upload of {id}");
        return id;
    }
}

/// Creates an image record (status `queued`, no data yet) as `token`'s project; its id.
pub async fn create_image_record(api: &str, token: &str) -> String {
    let created = post_json(
        &format!("{api}/v2/images"),
        token,
        json!({"name": "test", "disk_format": "raw", "container_format": "bare", "visibility": "private"}),
    )
    .await;
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no image created: {created}"))
        .to_owned()
}

/// POSTs `body` as `token`; the answer's JSON. A 5xx (Glance's SQLite answers 500 "database is
/// locked" while another process writes it, as a fleet test's node does) is tried again.
async fn post_json(url: &str, token: &str, body: Value) -> Value {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let response = reqwest::Client::new()
            .post(url)
            .header("x-auth-token", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        if !status.is_server_error() {
            return serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("POST {url} answered {status} {text:?}: {err}"));
        }
        last = format!("{status} {text:?}");
    }
    panic!("POST {url} kept failing: {last}");
}

/// Runs `command`; whether it succeeded, and its stdout and stderr together.
pub fn run_output(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Registers `url` as the catalog's public and internal image endpoint in RegionOne.
pub async fn register_image_endpoint(keystone: &str, url: &str, region: &str) {
    let token = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let http = reqwest::Client::new();
    if region != "RegionOne" {
        post_json(
            &format!("{keystone}/regions"),
            &token,
            json!({"region": {"id": region}}),
        )
        .await;
    }
    let service = post_json(
        &format!("{keystone}/services"),
        &token,
        json!({"service": {"type": "image", "name": "glance"}}),
    )
    .await;
    let service = service["service"]["id"].as_str().unwrap();
    for interface in ["public", "internal"] {
        let response = http
            .post(format!("{keystone}/endpoints"))
            .header("x-auth-token", &token)
            .json(&json!({"endpoint": {"service_id": service, "interface": interface, "region_id": region, "url": url}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}
