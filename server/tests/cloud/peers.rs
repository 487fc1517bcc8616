//! Two cache nodes of one fleet in front of the real Glance, filling from each other with
//! their own Keystone identity (`[cache_server] peer_roles`) instead of a shared secret: the
//! peer route admits that identity's role only, never a tenant's token nor another service's.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::metric;
use crate::common::openstack::{
    self, create_image, keystone_call, log_in, Glance, ADMIN_PASSWORD, DEMO_PASSWORD,
};
use crate::{get, start_node_configured, wait_cached, CacheNode};

/// The role the fleet's nodes hold, and their user.
const PEER_ROLE: &str = "image_cache_peer";
const NODE_USER: &str = "cachenode";
const NODE_PASSWORD: &str = "cachenode-secret";

/// Makes the nodes' user in project `service`, unless an earlier test of this binary did: roles
/// `admin` and `service` as Glance's own user has them (to see every image, to check tokens),
/// and [`PEER_ROLE`].
async fn node_identity(keystone: &str) {
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let admin = &admin;
        async move {
            let (status, answer) = keystone_call(keystone, admin, method, &path, body).await;
            assert!(
                status.is_success() || status == 409,
                "{path}: {status} {answer}"
            );
            answer
        }
    };
    use reqwest::Method;
    let first_id = |found: &Value, kind: &str| {
        found[kind][0]["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let roles = call(Method::GET, format!("/roles?name={PEER_ROLE}"), None).await;
    let mut peer_role = first_id(&roles, "roles");
    if peer_role.is_empty() {
        let made = call(
            Method::POST,
            "/roles".into(),
            Some(json!({"role": {"name": PEER_ROLE}})),
        )
        .await;
        peer_role = made["role"]["id"].as_str().unwrap().to_owned();
    }
    let admin_role = first_id(
        &call(Method::GET, "/roles?name=admin".into(), None).await,
        "roles",
    );
    let service_role = first_id(
        &call(Method::GET, "/roles?name=service".into(), None).await,
        "roles",
    );
    let project = first_id(
        &call(Method::GET, "/projects?name=service".into(), None).await,
        "projects",
    );
    let users = call(Method::GET, format!("/users?name={NODE_USER}"), None).await;
    let mut user = first_id(&users, "users");
    if user.is_empty() {
        let made = call(
            Method::POST,
            "/users".into(),
            Some(
                json!({"user": {"name": NODE_USER, "password": NODE_PASSWORD,
                                 "domain_id": "default", "default_project_id": project}}),
            ),
        )
        .await;
        user = made["user"]["id"].as_str().unwrap().to_owned();
    }
    for role in [&admin_role, &service_role, &peer_role] {
        let path = format!("/projects/{project}/users/{user}/roles/{role}");
        call(Method::PUT, path, None).await;
    }
}

/// A node of the fleet on `database` (a SQLite file), logging in to Keystone as the nodes'
/// user and admitting [`PEER_ROLE`] on its peer route.
fn fleet_node(glance: &Glance, database: &std::path::Path) -> CacheNode {
    let port = openstack::free_port();
    let more = format!(
        "username = {NODE_USER}\npassword = {NODE_PASSWORD}\n\n\
         [DEFAULT]\nimage_cache_driver = centralized_db\n\
         worker_self_reference_url = http://127.0.0.1:{port}\n\n\
         [database]\nconnection = sqlite:///{}\n\n\
         [cache_server]\npeer_roles = {PEER_ROLE}\n",
        database.display()
    );
    start_node_configured(&glance.url, &glance.keystone.url, &more, port, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_fill_from_each_other_as_their_keystone_identity_and_nobody_else_is_admitted() {
    let test = "nodes_fill_from_each_other_as_their_keystone_identity_and_nobody_else_is_admitted";
    let Some(glance) = Glance::shared(test) else {
        return;
    };
    let keystone = &glance.keystone.url;
    node_identity(keystone).await;
    let fleet = tempfile::tempdir().unwrap();
    let database = fleet.path().join("fleet.sqlite");
    let (one, two) = (fleet_node(glance, &database), fleet_node(glance, &database));
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let id = create_image(&glance.url, &demo, &data).await;

    // The first node reads Glance; once the fleet's table lists its copy, the second reads it.
    let first = get(&format!("{}/v2/images/{id}/file", one.url), Some(&demo)).await;
    assert_eq!(first.bytes().await.unwrap(), data);
    wait_cached(&one, &admin, &id, Duration::from_secs(15)).await;
    let holders = format!("{}/v2/cache/nodes/{id}", two.url);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = get(&holders, Some(&admin)).await.text().await.unwrap();
        if listed.contains(&one.url) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet never listed {id}: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = get(&format!("{}/v2/images/{id}/file", two.url), Some(&demo)).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.bytes().await.unwrap(), data);
    wait_cached(&two, &admin, &id, Duration::from_secs(15)).await;
    let counted = get(&format!("{}/metrics", two.url), None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&counted, "image_cache_bytes_total{source=\"peer\"}"),
        data.len() as u64,
        "the second node read the first's copy, as the nodes' Keystone user:\n{counted}"
    );

    // The peer route: the nodes' identity is served; a tenant, Glance's own service identity
    // (admin and service, without the peer role) and no token are not, whatever is held.
    let route = format!("{}/peer/v1/images/{id}", one.url);
    let node_token = log_in(keystone, NODE_USER, NODE_PASSWORD, "service").await;
    let glance_token = log_in(keystone, "glance", "glance-secret", "service").await;
    let served = get(&route, Some(&node_token)).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap(), data);
    for (token, status) in [
        (None, 401),
        (Some(demo.as_str()), 403),
        (Some(glance_token.as_str()), 403),
        (Some(admin.as_str()), 403),
        (Some("not-a-token"), 401),
    ] {
        let refused = get(&route, token).await;
        assert_eq!(refused.status(), status, "{token:?}");
        let said = refused.text().await.unwrap();
        assert!(
            !said.contains(&id),
            "the refusal names nothing held: {said}"
        );
    }
}
