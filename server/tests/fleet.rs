//! A fleet of three `image-cache-server` processes (distinct ports and cache directories) sharing
//! one central database, configured by Glance-style files alone, for each of PostgreSQL and
//! MariaDB: the nodes route, per-node listings and hits, a prune, `image-cache-manage
//! --all-nodes`, and an image deleted through one node leaving the others.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/db.rs"]
#[allow(dead_code)] // the helpers of the library's central tests too
mod db;
mod nodes;

use std::process::Command;
use std::time::{Duration, Instant};

use common::example::{json_as, start, upload, wait_listed};
use db::{Server, TestDb};
use nodes::{download, start_node, Node, ADMIN};

const KIB: usize = 1024;

fn rows(expected: &[(&Node, &str, i64)]) -> Vec<(String, String, i64, i64)> {
    let mut rows: Vec<_> = expected
        .iter()
        .map(|(node, id, hits)| (node.url.clone(), id.to_string(), *hits, 64 * KIB as i64))
        .collect();
    rows.sort();
    rows
}

async fn three_nodes_share_one_fleet(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let upstream = start(&work.path().join("upstream"), &["--no-cache"]);
    let client = reqwest::Client::new();
    let data = vec![5u8; 64 * KIB];
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(upload(&client, &upstream.url, ADMIN, "private", &data).await);
    }
    let [x, w, v, y] = [&ids[0], &ids[1], &ids[2], &ids[3]];
    // Node 1 holds two images at most, so a third prunes the least recently used.
    let one = start_node(
        &work.path().join("1"),
        &upstream.url,
        &db.url,
        "image_cache_max_size = 150000",
    );
    let two = start_node(&work.path().join("2"), &upstream.url, &db.url, "");
    let three = start_node(&work.path().join("3"), &upstream.url, &db.url, "");

    for (node, id) in [
        (&one, x),
        (&one, w),
        (&two, x),
        (&two, w),
        (&two, y),
        (&three, y),
    ] {
        assert_eq!(download(&client, node, id).await, "MISS");
        wait_listed(&node.url, ADMIN, id, Duration::from_secs(10), "").await;
    }
    db.wait_for_rows(rows(&[
        (&one, x, 0),
        (&one, w, 0),
        (&two, x, 0),
        (&two, w, 0),
        (&two, y, 0),
        (&three, y, 0),
    ]))
    .await;

    // The nodes route, on a node that does not hold the image.
    let mut both = vec![one.url.clone(), two.url.clone()];
    both.sort();
    let nodes = json_as(&client, &format!("{}/v2/cache/nodes/{x}", three.url), ADMIN).await;
    assert_eq!(nodes, serde_json::json!(both));
    let fleet = json_as(&client, &format!("{}/v2/cache/nodes", one.url), ADMIN).await;
    let mut all = vec![one.url.clone(), two.url.clone(), three.url.clone()];
    all.sort();
    assert_eq!(fleet, serde_json::json!({ "nodes": all }));

    // Each node lists its own images only.
    let listing = json_as(&client, &format!("{}/v2/cache", one.url), ADMIN).await;
    let mut listed: Vec<&str> = listing["cached_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec![x.as_str(), w.as_str()];
    expected.sort();
    assert_eq!(listed, expected);

    // A hit on node 2 raises node 2's row only; then node 1 uses x, so w is its least recent.
    assert_eq!(download(&client, &two, x).await, "HIT");
    assert_eq!(download(&client, &one, x).await, "HIT");
    db.wait_for_rows(rows(&[
        (&one, x, 1),
        (&one, w, 0),
        (&two, x, 1),
        (&two, w, 0),
        (&two, y, 0),
        (&three, y, 0),
    ]))
    .await;

    // A third image takes node 1 over its limit: its prune removes its w, not node 2's.
    assert_eq!(download(&client, &one, v).await, "MISS");
    db.wait_for_rows(rows(&[
        (&one, x, 1),
        (&one, v, 0),
        (&two, x, 1),
        (&two, w, 0),
        (&two, y, 0),
        (&three, y, 0),
    ]))
    .await;
    assert!(!one.dir.join(w).exists() && two.dir.join(w).exists());

    // The whole fleet from its central database: every node, with a Node column.
    let listed = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
        .args(["--all-nodes", "--config-file"])
        .arg(&one.config)
        .args(["--os-auth-token", ADMIN, "list-cached"])
        .env_remove("OS_AUTH_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{said}");
    assert!(
        said.contains("Found 6 cached images on 3 nodes") && said.contains("Node"),
        "{said}"
    );
    for node in [&one, &two, &three] {
        assert!(said.contains(&node.url), "{said}");
    }

    // The image deleted through node 3 leaves nodes 1 and 2: files and rows.
    let deleted = client
        .delete(format!("{}/v2/images/{x}", three.url))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let at = Instant::now();
    db.wait_for_rows(rows(&[
        (&one, v, 0),
        (&two, w, 0),
        (&two, y, 0),
        (&three, y, 0),
    ]))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while one.dir.join(x).exists() || two.dir.join(x).exists() {
        assert!(
            Instant::now() < deadline,
            "the files of the deleted image stay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}: the deleted image left the other nodes in {:?}",
        server.name(),
        at.elapsed()
    );

    // list-nodes: through a node (no database in the tool's configuration), and from the
    // database named by a node's configuration file.
    let through = manage(&["-H", &three.url, "--os-auth-token", ADMIN, "list-nodes", w]);
    assert!(
        through.contains(&two.url) && !through.contains(&one.url),
        "{through}"
    );
    let config = one.config.to_str().unwrap();
    let direct = manage(&["--config-file", config, "list-nodes", y]);
    assert!(
        direct.contains(&two.url) && direct.contains(&three.url),
        "{direct}"
    );
    assert!(!direct.contains(&one.url), "{direct}");

    // --all-nodes through a node: pre-seed every node with v.
    let seeded = manage(&[
        "--all-nodes",
        "-H",
        &one.url,
        "--os-auth-token",
        ADMIN,
        "--force",
        "queue-image",
        v,
    ]);
    assert!(!seeded.contains("rror"), "{seeded}");
    db.wait_for_rows(rows(&[
        (&one, v, 0),
        (&two, v, 0),
        (&two, w, 0),
        (&two, y, 0),
        (&three, v, 0),
        (&three, y, 0),
    ]))
    .await;

    // --all-nodes from the database: v leaves every node again.
    let deleted = manage(&[
        "--all-nodes",
        "--config-file",
        config,
        "--os-auth-token",
        ADMIN,
        "--force",
        "delete-cached-image",
        v,
    ]);
    assert!(!deleted.contains("rror"), "{deleted}");
    db.wait_for_rows(rows(&[(&two, w, 0), (&two, y, 0), (&three, y, 0)]))
        .await;
    for node in [&one, &two, &three] {
        assert!(!node.dir.join(v).exists(), "{} keeps v", node.url);
    }

    // A node that is down is named, and the exit is a failure.
    let gone_url = three.url.clone();
    drop(three);
    let output = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
        .args([
            "--all-nodes",
            "--config-file",
            config,
            "--os-auth-token",
            ADMIN,
            "list-cached",
        ])
        .env_remove("OS_AUTH_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    // The nodes that answered are listed on stdout, the one down is named on stderr.
    assert!(said.contains(&two.url), "{said}");
    assert!(
        errors.contains(&gone_url) && !said.contains(&gone_url),
        "stdout: {said}\nstderr: {errors}"
    );

    // The decommissioned node is forgotten: its rows and its node row.
    let forgot = manage(&["--config-file", config, "--force", "forget-node", &gone_url]);
    assert!(
        forgot.contains("Forgot node") && forgot.contains("1 cached image records"),
        "{forgot}"
    );
    db.wait_for_rows(rows(&[(&two, w, 0), (&two, y, 0)])).await;
    assert!(!db.nodes().await.contains(&gone_url));
}

/// Runs image-cache-manage; its output, after checking it succeeded.
fn manage(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
        .args(args)
        .env_remove("OS_AUTH_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {said}{errors}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_fleet_on_postgresql() {
    three_nodes_share_one_fleet(Server::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_fleet_on_mariadb() {
    three_nodes_share_one_fleet(Server::MariaDb).await;
}
