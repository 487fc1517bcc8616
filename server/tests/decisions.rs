//! The node's access decisions, over real sockets against the example image API: a `reader` is
//! refused the download of a cached image as of an uncached one, refusals are the same whatever
//! the cache holds, and with the image API stopped a caller admitted a moment ago gets a whole
//! HIT (`authorization_stale_if_error`) while everyone else gets 503.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::example::{start, start_logged, upload, wait_listed, Server};
use common::metric;

const ADMIN: &str = "admin-secret";
const MEMBER: &str = "u1";
const MEMBER2: &str = "u2";
const READER: &str = "r1";
const OUTSIDER: &str = "o1";

fn api(dir: &std::path::Path) -> Server {
    start(
        dir,
        &[
            "--no-cache",
            "--user",
            "u2=proj1:member",
            "--user",
            "r1=proj1:reader",
            "--user",
            "o1=proj2:member",
        ],
    )
}

async fn request(
    method: &str,
    url: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let client = reqwest::Client::new();
    let mut builder = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("x-auth-token", token);
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    // What may differ between two answers of the same refusal.
    let headers = response
        .headers()
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "x-openstack-request-id"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// A download's answer, the id named in a 404's message blanked (the only difference allowed).
async fn answer(
    node: &str,
    id: &str,
    method: &str,
    caller: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let url = format!("{node}/v2/images/{id}/file");
    let (status, headers, body) = request(method, &url, caller, extra).await;
    (
        status,
        headers,
        String::from_utf8_lossy(&body).replace(id, "ID"),
    )
}

async fn cache_via(node: &str, id: &str, token: &str, data: &[u8]) {
    let url = format!("{node}/v2/images/{id}/file");
    let (status, _, body) = request("GET", &url, token, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    wait_listed(node, ADMIN, id, Duration::from_secs(20), "the fill").await;
}

/// The node's `/metrics` text.
async fn metrics_of(node: &str) -> String {
    let response = reqwest::get(format!("{node}/metrics")).await.unwrap();
    response.text().await.unwrap()
}

/// `image_cache_authorization_decisions_total` for `decision` in a metrics text.
fn decisions(text: &str, decision: &str) -> u64 {
    let line = format!("image_cache_authorization_decisions_total{{decision=\"{decision}\"}}");
    metric(text, &line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_refused_a_cached_download_as_an_uncached_one_and_refusals_tell_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = api(&dir.path().join("api"));
    let (node, _log) = start_logged(&upstream.url, &dir.path().join("cache"), "", "", &[]);
    let client = reqwest::Client::new();
    let data = common::image_data(300_000);
    let cached = upload(&client, &upstream.url, MEMBER, "private", &data).await;
    let uncached = upload(&client, &upstream.url, MEMBER, "private", &data).await;
    cache_via(&node.url, &cached, MEMBER, &data).await;
    let nonexistent = "00000000-0000-0000-0000-000000000000";

    // A member gets the HIT; the reader sees the metadata but gets the API's 403 for the data.
    let (status, headers, _) = request(
        "GET",
        &format!("{}/v2/images/{cached}/file", node.url),
        MEMBER,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("x-cache-status".into(), "HIT".into())));
    let (status, _, _) = request(
        "GET",
        &format!("{}/v2/images/{cached}", node.url),
        READER,
        &[],
    )
    .await;
    assert_eq!(status, 200, "a reader may see the metadata");

    let forms: [(&str, &[(&str, &str)]); 4] = [
        ("GET", &[]),
        ("HEAD", &[]),
        ("GET", &[("range", "bytes=0-99")]),
        ("GET", &[("if-none-match", "\"x\"")]),
    ];
    for (method, extra) in forms {
        for (caller, expected) in [(READER, 403), (OUTSIDER, 404), ("nobody", 401)] {
            let of_cached = answer(&node.url, &cached, method, caller, extra).await;
            let of_uncached = answer(&node.url, &uncached, method, caller, extra).await;
            assert_eq!(
                of_cached.0, expected,
                "{method} {extra:?} as {caller}: {of_cached:?}"
            );
            assert_eq!(of_cached, of_uncached, "{method} {extra:?} as {caller}");
            assert!(
                !of_cached.1.iter().any(|(n, _)| n == "x-cache-status"),
                "a refusal names the cache: {of_cached:?}"
            );
            if caller != READER {
                // Nobody can tell a hidden image from one that does not exist.
                assert_eq!(
                    of_cached,
                    answer(&node.url, nonexistent, method, caller, extra).await,
                    "{method} {extra:?} as {caller}"
                );
            }
        }
    }
    // The member's decisions are unchanged by all this: still a HIT.
    let (status, headers, body) = request(
        "GET",
        &format!("{}/v2/images/{cached}/file", node.url),
        MEMBER,
        &[],
    )
    .await;
    assert_eq!((status, body.len()), (200, data.len()));
    assert!(headers.contains(&("x-cache-status".into(), "HIT".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_glance_down_a_caller_admitted_within_stale_if_error_gets_a_whole_hit() {
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Some(api(&dir.path().join("api")));
    let api_url = upstream.as_ref().unwrap().url.clone();
    let options = "authorization_cache_time = 1\nauthorization_stale_if_error = 300\n";
    let (node, log) = start_logged(&api_url, &dir.path().join("cache"), options, "", &[]);
    let (plain, _plain_log) = start_logged(&api_url, &dir.path().join("plain"), "", "", &[]);
    let client = reqwest::Client::new();
    let data = common::image_data(2 * 1024 * 1024);
    let kept = upload(&client, &api_url, MEMBER, "private", &data).await;
    let deleted = upload(&client, &api_url, MEMBER, "private", &data).await;
    for node in [&node.url, &plain.url] {
        cache_via(node, &kept, MEMBER, &data).await;
    }
    cache_via(&node.url, &deleted, MEMBER, &data).await;
    // Deleted through the node before the outage: its decision is void with it.
    let (status, _, _) = request(
        "DELETE",
        &format!("{}/v2/images/{deleted}", node.url),
        MEMBER,
        &[],
    )
    .await;
    assert_eq!(status, 204);

    // Glance stops.
    drop(upstream.take());
    tokio::time::sleep(Duration::from_millis(1200)).await; // past authorization_cache_time

    let url = |node: &str, id: &str| format!("{node}/v2/images/{id}/file");
    let (status, headers, body) = request("GET", &url(&node.url, &kept), MEMBER, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers.contains(&("x-cache-status".into(), "HIT".into())));
    assert_eq!(body, data, "the whole image");
    // Another member of the project, never checked here: 503, never an unchecked 200.
    let (status, headers, _) = request("GET", &url(&node.url, &kept), MEMBER2, &[]).await;
    assert_eq!(status, 503);
    assert!(
        headers.contains(&("retry-after".into(), "5".into())),
        "{headers:?}"
    );
    // The image deleted before the outage is not served from a stale decision.
    let (status, _, _) = request("GET", &url(&node.url, &deleted), MEMBER, &[]).await;
    assert_eq!(status, 503);
    // A node without the option: 503 to all.
    let (status, _, _) = request("GET", &url(&plain.url, &kept), MEMBER, &[]).await;
    assert_eq!(status, 503);

    let text = metrics_of(&node.url).await;
    assert_eq!(decisions(&text, "stale"), 1, "{text}");
    assert!(decisions(&text, "unavailable") >= 2, "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log
        .lock()
        .unwrap()
        .contains("serving a hit on a remembered decision")
    {
        assert!(
            Instant::now() < deadline,
            "the stale admission is not logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_decision_spares_the_api_and_a_deactivation_voids_it() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = api(&dir.path().join("api"));
    let (node, _log) = start_logged(
        &upstream.url,
        &dir.path().join("cache"),
        "authorization_cache_time = 300\n",
        "",
        &[],
    );
    let client = reqwest::Client::new();
    let data = common::image_data(100_000);
    let id = upload(&client, &upstream.url, MEMBER, "private", &data).await;
    cache_via(&node.url, &id, MEMBER, &data).await;
    let url = format!("{}/v2/images/{id}/file", node.url);
    for _ in 0..20 {
        let (status, _, body) = request("GET", &url, MEMBER, &[]).await;
        assert_eq!((status, body.len()), (200, data.len()));
    }
    let text = metrics_of(&node.url).await;
    assert_eq!(decisions(&text, "asked"), 1, "{text}");
    assert_eq!(decisions(&text, "remembered"), 20, "{text}");

    // Deactivated through the node: the member is refused at once, though its decision is
    // younger than authorization_cache_time.
    let (status, _, _) = request(
        "POST",
        &format!("{}/v2/images/{id}/actions/deactivate", node.url),
        ADMIN,
        &[],
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = request("GET", &url, MEMBER, &[]).await;
    assert_eq!(status, 403);
}
