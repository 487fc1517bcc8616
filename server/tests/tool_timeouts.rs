//! The tools' client has a connect and a read timeout, never a total one: an answer that keeps
//! coming, however slowly, is read whole; one that stops is given up with a sentence.
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A node whose `GET /v2/cache` sends its JSON a byte every `every`, or (with `stall`) half of it
/// and then nothing.
async fn slow_node(every: Duration, stall: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = br#"{"cached_images": [], "queued_images": []}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                for (i, byte) in body.iter().enumerate() {
                    if stall && i == body.len() / 2 {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(every).await;
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr.to_string()
}

async fn list_cached(node: &str) -> (std::process::Output, Duration) {
    let node = node.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_image-cache-manage"))
            .args(["-H", &node, "--os-auth-token", "t", "--json", "list-cached"])
            .env("IMAGE_CACHE_READ_TIMEOUT", "1")
            .output()
            .unwrap();
        (output, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_in_total_than_the_read_timeout_is_read_whole() {
    // 43 bytes, one every 100 ms: over 4 s in all, never 1 s between two.
    let node = slow_node(Duration::from_millis(100), false).await;
    let (output, took) = list_cached(&node).await;
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(took > Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_stops_is_given_up_after_the_read_timeout() {
    let node = slow_node(Duration::from_millis(10), true).await;
    let (output, took) = list_cached(&node).await;
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(said.contains(&node), "the node is named: {said}");
    assert!(
        said.to_lowercase().contains("timed out") || said.to_lowercase().contains("timeout"),
        "{said}"
    );
}
