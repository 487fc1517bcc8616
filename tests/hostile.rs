//! Hostile input against the example image server, over real sockets (the suite is
//! `common/hostile.rs`; the caching proxy's run is the server crate's `tests/hostile.rs`).
//! Clients that never read do not stall a fill, and the server's memory stays bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::example::{start, upload};
use common::hostile::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_server_refuses_hostile_input() {
    let root = tempfile::tempdir().unwrap();
    let server = start(root.path(), &[]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let image = cached_image(&server, &server.url, &data).await;
    let target = Target {
        name: "image_server",
        addr: addr_of(&server),
        server,
        image,
        data,
    };
    suite(&target, root.path(), &root.path().join("cache")).await;
    drop(target.server);
}

/// Opens a download and never reads a byte of the answer.
async fn never_reading(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request("GET", path.as_bytes(), b""))
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_stall_nobody_and_hold_no_memory() {
    let root = tempfile::tempdir().unwrap();
    let server = start(root.path(), &[]);
    let addr = addr_of(&server);
    let client = reqwest::Client::new();
    let data: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let id = upload(&client, &server.url, ADMIN, "private", &data).await;
    let path = format!("/v2/images/{id}/file");
    let baseline = server.rss();

    // Eight clients ask for the uncached image and read nothing; the first leads the fill.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(never_reading(addr, &path).await);
    }
    let whole = |answer: Answer| answer.status == 200 && answer.body == data;
    let during_fill = tokio::time::timeout(
        Duration::from_secs(120),
        send_raw(addr, &request("GET", path.as_bytes(), b"")),
    )
    .await
    .expect("a reading client finishes while eight others read nothing");
    assert!(whole(during_fill));
    let committed = root.path().join("cache").join(&id);
    for _ in 0..600 {
        if committed.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        committed.exists(),
        "the fill committed despite its stalled leader"
    );

    let after_fill = server.rss().saturating_sub(baseline);
    // Eight more stall on hits.
    for _ in 0..8 {
        stalled.push(never_reading(addr, &path).await);
    }
    let hit = send_raw(addr, &request("GET", path.as_bytes(), b"")).await;
    assert!(hit.head.contains("HIT"));
    assert!(whole(hit));
    let grown = server.rss().saturating_sub(baseline);
    eprintln!(
        "RSS: {} MiB after the upload; +{} MiB with 8 downloads stalled on the fill, +{} MiB \
         with 8 more stalled on hits",
        baseline >> 20,
        after_fill >> 20,
        grown >> 20
    );
    // Each stalled download holds about one 1 MiB chunk (hyper's write buffer), never the image:
    // each stays under two chunks. The fill they followed kept its window of recent chunks (32
    // MiB, for followers at the writer's heels: here the reading client), whose memory the
    // allocator keeps after the fill ends; that is once per fill, whatever the crowd.
    let window = 32 << 20;
    assert!(
        after_fill < window + (16 << 20),
        "8 downloads stalled on the fill of a 64 MiB image grew the server by {} MiB",
        after_fill >> 20
    );
    assert!(
        grown.saturating_sub(after_fill) < 16 << 20,
        "8 downloads stalled on hits of a 64 MiB image grew the server by {} MiB",
        (grown - after_fill) >> 20
    );

    // The stalled clients read at last: each gets the whole image.
    for mut stream in stalled {
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        assert!(response.ends_with(&data[data.len() - 1024..]));
        assert_eq!(
            response.len() - response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4,
            data.len()
        );
    }
}
