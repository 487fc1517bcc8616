//! What an operator sees in the log: one line per download at `debug` with how it was answered,
//! and the fill's outcome at `info` inside the span of the request that started it (with the
//! image id), although the fill runs on tasks and threads of its own.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{image_data, FakeImage, TestServer, OWNER};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_and_fills_log_inside_the_request_span() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Global: the fill writes from a blocking thread, which a thread-local subscriber misses.
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("tower_image_cache=debug")
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    server
        .api
        .add("img", FakeImage::private(image_data(300_000)));
    for _ in 0..2 {
        let response = server.get("img", OWNER).await;
        response.bytes().await.unwrap();
        server.cache.idle().await;
    }

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
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
        .find(|l| l.contains("image cached"))
        .unwrap_or_else(|| panic!("no fill outcome in:\n{text}"));
    assert!(
        cached.contains(" INFO image_request{image=img method=GET}"),
        "{cached}"
    );
}
