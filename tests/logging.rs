//! What an operator sees in the log: one line per download at `debug` with how it was answered,
//! and the fill's outcome at `info` inside the span of the request that started it (with the
//! image id), although the fill runs on tasks and threads of its own.

mod common;

use common::{image_data, Captured, FakeImage, TestServer, OWNER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_and_fills_log_inside_the_request_span() {
    let logs = Captured::install_global("tower_image_cache=debug");

    let server = TestServer::start().await;
    server
        .api
        .add("img", FakeImage::private(image_data(300_000)));
    for _ in 0..2 {
        let response = server.get("img", OWNER).await;
        response.bytes().await.unwrap();
        server.cache.idle().await;
    }

    let text = logs.text();
    let lines: Vec<&str> = text.lines().collect();
    let answered: Vec<&&str> = lines.iter().filter(|l| l.contains(" answered")).collect();
    assert_eq!(answered.len(), 2, "{text}");
    assert!(
        answered[0].contains("DEBUG image_request{image=img method=GET}")
            && answered[0].contains("cache_status=\"MISS\""),
        "{text}"
    );
    assert!(answered[1].contains("cache_status=\"HIT\""), "{text}");
    let cached = lines
        .iter()
        .find(|l| l.contains("fill committed"))
        .unwrap_or_else(|| panic!("no fill outcome in:\n{text}"));
    assert!(
        cached.contains(" INFO image_request{image=img method=GET}"),
        "{cached}"
    );
}
