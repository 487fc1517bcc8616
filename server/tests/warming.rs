//! Warming K nodes of a fleet (real `image-cache-server` processes filling from each other, on
//! PostgreSQL, in front of a slow upstream that counts its reads): `image-cache-manage
//! queue-image --nodes K` and `PUT /v2/cache/{id}` with `X-Image-Cache-Nodes: K` queue an image
//! on the K nodes rendezvous hashing picks, the same ones every time, and the K copies cost
//! one read of the upstream.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/db.rs"]
#[allow(dead_code)] // the helpers of the library's central tests too
mod db;
mod nodes;

use std::process::Command;
use std::time::Duration;

use common::example::wait_listed;
use common::raw_upstream::{Mode, RawUpstream};
use db::{Server, TestDb};
use image_cache_server::placement::nodes_for;
use nodes::{peer_node, Node, ADMIN};

const FIRST: &str = "6f0e8d4c-3b2a-4c1d-9e8f-7a6b5c4d3e2f";
const SECOND: &str = "0b3c1d2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";

/// Waits until each of `chosen` holds `id`, and checks that no other node of `nodes` does.
async fn cached_on_exactly(nodes: &[Node], chosen: &[String], id: &str) {
    for node in nodes.iter().filter(|n| chosen.contains(&n.url)) {
        wait_listed(&node.url, ADMIN, id, Duration::from_secs(20), "").await;
    }
    for node in nodes.iter().filter(|n| !chosen.contains(&n.url)) {
        assert!(!node.dir.join(id).exists(), "{} holds {id} too", node.url);
        assert!(!node.dir.join("incomplete").join(id).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_nodes_are_warmed_by_rendezvous_with_one_upstream_read() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = common::image_data(2 * 1024 * 1024);
    let upstream = RawUpstream::start(data, Mode::Slow).await;
    let nodes: Vec<Node> = ["1", "2", "3", "4"]
        .into_iter()
        .map(|name| peer_node(work.path(), name, &upstream, &db))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let mut registered = Vec::new();
    for _ in 0..200 {
        registered = db.nodes().await;
        if registered.len() == urls.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(registered.len(), 4, "every node is in the fleet's table");

    // The tool, reading the fleet from the database, twice: the same two nodes.
    let chosen = nodes_for(&urls, FIRST, 2);
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
            .args(["--nodes", "2", "--config-file"])
            .arg(&nodes[0].config)
            .args(["--os-auth-token", ADMIN, "-f", "-v", "queue-image", FIRST])
            .env_remove("OS_AUTH_TOKEN")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for node in &chosen {
            assert!(said.contains(node.as_str()), "{node} is named: {said}");
        }
    }
    cached_on_exactly(&nodes, &chosen, FIRST).await;
    assert_eq!(upstream.downloads().len(), 1, "two warm copies, one read");

    // An API user, through any node: the header picks the same nodes the tool would.
    let expected = nodes_for(&urls, SECOND, 3);
    let response = reqwest::Client::new()
        .put(format!("{}/v2/cache/{SECOND}", nodes[3].url))
        .header("x-auth-token", ADMIN)
        .header("x-image-cache-nodes", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["x-image-cache-queued-on"],
        expected.join(", ").as_str()
    );
    cached_on_exactly(&nodes, &expected, SECOND).await;
    assert_eq!(upstream.downloads().len(), 2, "three warm copies, one read");

    // A caller the fleet refuses is refused at once, and nothing is queued anywhere.
    let refused = reqwest::Client::new()
        .put(format!("{}/v2/cache/{SECOND}", nodes[0].url))
        .header("x-auth-token", "not-a-token")
        .header("x-image-cache-nodes", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let bad = reqwest::Client::new()
        .put(format!("{}/v2/cache/{SECOND}", nodes[0].url))
        .header("x-auth-token", ADMIN)
        .header("x-image-cache-nodes", "none")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
