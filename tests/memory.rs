//! Memory stays bounded under a crowd: 2,000 idle connections, 200 slow readers and 300 clients
//! that never read a 1 GiB hit. The chunks in flight have a global budget (past it, reads
//! shrink to 64 KiB, and past twice it readers wait), and resident memory falls back to within
//! 64 MiB of idle once they close.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::example::{start, upload, wait_listed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-secret";
const SIZE: usize = 1024 * 1024 * 1024;

async fn get_stream(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: node\r\nX-Auth-Token: {ADMIN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_idle_slow_and_stuck_clients_leaves_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let client = reqwest::Client::new();
    let data = common::image_data(SIZE);
    let id = upload(&client, &server.url, ADMIN, "private", &data).await;
    let path = format!("/v2/images/{id}/file");
    let miss = client
        .get(format!("{}{path}", server.url))
        .header("x-auth-token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(miss.bytes().await.unwrap().len(), SIZE);
    wait_listed(&server.url, ADMIN, &id, Duration::from_secs(60), "the fill").await;
    drop(data);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = server.rss();

    let mut idle_connections = Vec::new();
    for _ in 0..2000 {
        idle_connections.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut stuck = Vec::new();
    for _ in 0..300 {
        stuck.push(get_stream(addr, &path).await);
    }
    // 200 readers taking 16 KiB every 100 ms.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = get_stream(addr, &path).await;
        slow.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let until = Instant::now() + Duration::from_secs(6);
            let mut got = 0;
            while Instant::now() < until {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            got
        }));
    }
    let mut peak = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(server.rss());
    }
    for reader in slow {
        assert!(reader.await.unwrap() > 0, "a slow reader got nothing");
    }
    let grown = peak.saturating_sub(idle);
    // The chunks' limit (256 MiB: whole chunks within 128 MiB, small ones past it, readers
    // waiting beyond), not a chunk or more each (500 MiB and more).
    assert!(
        grown < 330 << 20,
        "500 downloads and 2,000 idle connections grew the server by {} MiB",
        grown >> 20
    );
    drop(stuck);
    drop(idle_connections);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = server.rss();
    eprintln!(
        "RSS: idle {} MiB, peak +{} MiB, 10 s after the crowd left +{} MiB",
        idle >> 20,
        grown >> 20,
        after.saturating_sub(idle) >> 20
    );
    assert!(
        after < idle + (64 << 20),
        "10 s after the crowd left the server holds {} MiB more than idle",
        after.saturating_sub(idle) >> 20
    );
}
