//! `contrib/`'s Grafana dashboard and Prometheus alert rules read series a real node exports:
//! a node on a central database renders `/metrics` after a MISS, a HIT and a failed fill, and
//! every series (with its label matchers) that a panel or a rule asks for is in it. The rules
//! pass `promtool check rules`.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::example::server_binary;
use common::raw_upstream::{Mode, RawUpstream};

fn contrib(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(contrib("grafana/image-cache.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs
}

/// The expressions of the alert rules.
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(contrib("prometheus/image-cache-alerts.yml")).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The series an expression selects: each metric name of ours, with its `label="value"`
/// matchers (the dashboard's `instance` variable and regex matchers aside).
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("image_cache_") || rest.starts_with("process_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..len].to_owned();
            let mut matchers = Vec::new();
            if rest[len..].starts_with('{') {
                let close = rest[len..].find('}').unwrap();
                for matcher in rest[len + 1..len + close].split(',') {
                    if let Some((label, value)) = matcher.split_once('=') {
                        let (label, value) = (label.trim(), value.trim());
                        if label == "instance" || value.starts_with('~') {
                            continue;
                        }
                        matchers.push((label.to_owned(), value.trim_matches('"').to_owned()));
                    }
                }
            }
            found.push((name, matchers));
            i += len;
        } else {
            i += rest.chars().next().unwrap().len_utf8();
        }
    }
    found
}

/// Whether `metrics` has a sample of `name` with every one of `matchers`.
fn exported(metrics: &str, name: &str, matchers: &[(String, String)]) -> bool {
    metrics.lines().any(|line| {
        let Some(rest) = line.strip_prefix(name) else {
            return false;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return false;
        }
        matchers
            .iter()
            .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_alert_rules_use_is_exported() {
    let data = Bytes::from(vec![7u8; 200_000]);
    let upstream = RawUpstream::start(data.clone(), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("glance-api.conf");
    let db = dir.path().join("central.db");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nbind_host = 127.0.0.1\nbind_port = 0\n\
             image_cache_driver = centralized_db\nworker_self_reference_url = http://node-1:9292\n\n\
             [database]\nconnection = sqlite:///{}\n\n\
             [cache_server]\nupstream = {}\nservice_token = admin-secret\nmanage_token = admin-secret\n",
            dir.path().join("cache").display(),
            db.display(),
            upstream.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(server_binary())
        .arg("--config-file")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    let http = reqwest::Client::new();
    let get = |id: &str| {
        http.get(format!("{url}/v2/images/{id}/file"))
            .header("x-auth-token", "admin-secret")
            .send()
    };
    assert_eq!(get("img-a").await.unwrap().bytes().await.unwrap(), data);
    // Until a download is a HIT (the file is renamed into place a moment before its record
    // is written, so the file alone does not say so).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let again = get("img-a").await.unwrap();
        let status = again.headers()["x-cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(again.bytes().await.unwrap() == data);
        if status == "HIT" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never a HIT");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    upstream.set_mode(Mode::CutWrongBytes);
    assert!(get("img-b").await.unwrap().bytes().await.is_err());
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let mut missing = Vec::new();
    let exprs: Vec<String> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    let mut checked = 0;
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            checked += 1;
            if !exported(&metrics, &name, &matchers) {
                missing.push(format!("{name}{matchers:?} (in {expr})"));
            }
        }
    }
    assert!(checked > 20, "only {checked} selectors found");
    assert!(
        missing.is_empty(),
        "not in /metrics:\n{}\n\n{metrics}",
        missing.join("\n")
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    let rules = contrib("prometheus/image-cache-alerts.yml");
    let output = match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing ({err}); .ci/run installs it (apt-get install -y prometheus)"
            );
            println!("SKIPPED: promtool is not installed (apt-get install -y prometheus)");
            return;
        }
    };
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
