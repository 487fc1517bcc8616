//! Hostile input against the example image server and the caching proxy, over real sockets.
//!
//! Every request here is written byte for byte (no client library normalises it). Each gets a
//! clear 4xx, or the answer SPEC §3 says passes through (a malformed `Range` is ignored: the whole
//! image, 200); nothing answers 5xx or drops the connection; nothing is created outside
//! `image_cache_dir` and nothing but verified images inside it; the server keeps serving.
//! Clients that never read do not stall a fill, and the server's memory stays bounded.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "server")]
use common::example::start_proxy;
use common::example::{start, upload, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-secret";

/// Whether an answer is right, given the cached image's bytes.
type Judge = fn(&Answer, &[u8]) -> bool;

/// What came back for one raw request.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn addr_of(server: &Server) -> SocketAddr {
    server.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Sends `request` as given (it must ask for `Connection: close`) and reads the whole answer.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read all of an oversized request.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                // A reset after a complete answer (the server closed with our bytes unread).
                Err(_) if !response.is_empty() => break,
                Err(err) => panic!("no answer: {err}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not answer within 30 s");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response head in {:?}",
                String::from_utf8_lossy(&response)
            )
        })
        + 4;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head,
        body: response[split..].to_vec(),
    }
}

/// A request with the admin token and `Connection: close`, plus `extra` header lines.
fn request(method: &str, target: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    out.extend_from_slice(format!("X-Auth-Token: {ADMIN}\r\n").as_bytes());
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out
}

fn hostile_ids() -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = [
        "..",
        ".",
        "%2e%2e",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "..%2f..%2fetc",
        "a%2fb",
        "a%5cb",
        "a\\b",
        "..\\..\\x",
        "a%00b",
        "%C3%A9t%C3%A9",
        "%E2%80%AE",
        "cache.db",
        "incomplete",
        "invalid",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    ids.push(b"a\0b".to_vec());
    ids.push("été".as_bytes().to_vec());
    ids.push(vec![b'a'; 10 * 1024]);
    ids.push(vec![b'%'; 300]);
    ids
}

fn with_id(prefix: &str, id: &[u8], suffix: &str) -> Vec<u8> {
    let mut target = prefix.as_bytes().to_vec();
    target.extend_from_slice(id);
    target.extend_from_slice(suffix.as_bytes());
    target
}

/// Everything under `root`, as relative paths.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            found.insert(path.strip_prefix(root).unwrap().to_path_buf());
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

/// The sled database's own files are its business; everything else is compared.
fn outside_db(tree: &BTreeSet<PathBuf>, db: &Path) -> BTreeSet<PathBuf> {
    tree.iter()
        .filter(|p| !p.starts_with(db))
        .cloned()
        .collect()
}

struct Target {
    name: &'static str,
    server: Server,
    addr: SocketAddr,
    /// An image cached by this server, and its bytes.
    image: String,
    data: Vec<u8>,
}

async fn cached_image(server: &Server, upstream_url: &str, data: &[u8]) -> String {
    let client = reqwest::Client::new();
    let id = upload(&client, upstream_url, ADMIN, "private", data).await;
    let url = format!("{}/v2/images/{id}/file", server.url);
    for _ in 0..2 {
        let response = client
            .get(&url)
            .header("x-auth-token", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap(), data);
    }
    id
}

/// Runs the whole hostile suite against one server whose cache lives in `cache_dir`, with
/// `root` the directory that holds everything the server may write.
async fn suite(target: &Target, root: &Path, cache_dir: &Path) {
    let before = tree(root);
    let db = cache_dir.strip_prefix(root).unwrap().join("cache.db");
    let mut failures = Vec::new();
    let mut check = |what: String, answer: &Answer, ok: bool| {
        if answer.status >= 500 || !ok {
            failures.push(format!(
                "{}: {what}: {}",
                target.name,
                answer.head.lines().next().unwrap_or("")
            ));
        }
    };
    let addr = target.addr;

    // Ids no file may be named after, on every route that takes one.
    for id in hostile_ids() {
        let shown = String::from_utf8_lossy(&id[..id.len().min(40)]).into_owned();
        for (method, prefix, suffix) in [
            ("GET", "/v2/images/", "/file"),
            ("HEAD", "/v2/images/", "/file"),
            ("GET", "/v1/images/", ""),
            ("GET", "/v2/images/", ""),
            ("DELETE", "/v2/images/", ""),
            ("PUT", "/v2/cache/", ""),
            ("DELETE", "/v2/cache/", ""),
            ("PUT", "/v2/queued_images/", ""),
            ("DELETE", "/v2/queued_images/", ""),
            ("DELETE", "/v2/cached_images/", ""),
            ("PUT", "/queued/", ""),
        ] {
            let answer = send_raw(addr, &request(method, &with_id(prefix, &id, suffix), b"")).await;
            let ok = (400..500).contains(&answer.status);
            check(format!("{method} {prefix}{shown}{suffix}"), &answer, ok);
        }
    }

    // Absurd ranges on a cached image: the whole image (ignored), a right part, or 416.
    let file = format!("/v2/images/{}/file", target.image);
    let many: String = (0..3000)
        .map(|i| format!("{}-{}", i * 2, i * 2))
        .collect::<Vec<_>>()
        .join(",");
    for range in [
        "bytes=99999999999999999999999999-".to_owned(),
        "bytes=0-99999999999999999999999999".to_owned(),
        "bytes=-99999999999999999999999999".to_owned(),
        "bytes=18446744073709551615-18446744073709551615".to_owned(),
        "bytes=-1-5".to_owned(),
        "bytes=--5".to_owned(),
        "bytes=5-3".to_owned(),
        "bytes=-0".to_owned(),
        "bytes=".to_owned(),
        "bytes=,,,,".to_owned(),
        "items=0-5".to_owned(),
        "bytes=0-0,-1".to_owned(),
        format!("bytes={many}"),
    ] {
        let answer = send_raw(
            addr,
            &request(
                "GET",
                file.as_bytes(),
                format!("Range: {range}\r\n").as_bytes(),
            ),
        )
        .await;
        let ok = match answer.status {
            200 => answer.body == target.data,
            206 => {
                let (start, end) = content_range(&answer.head);
                answer.body == target.data[start..=end]
            }
            416 => answer
                .head
                .to_lowercase()
                .contains(&format!("content-range: bytes */{}", target.data.len())),
            _ => false,
        };
        check(
            format!("Range: {}", &range[..range.len().min(60)]),
            &answer,
            ok,
        );
    }

    // Oversized and duplicate headers.
    let huge = format!("X-Padding: {}\r\n", "a".repeat(1024 * 1024));
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, Judge)> = vec![
        (
            "a 1 MiB header",
            request("GET", file.as_bytes(), huge.as_bytes()),
            |a, _| (400..500).contains(&a.status),
        ),
        (
            "500 headers",
            request("GET", file.as_bytes(), many_headers.as_bytes()),
            |a, _| (400..500).contains(&a.status),
        ),
        (
            "two Content-Lengths",
            request(
                "PUT",
                b"/v2/cache/x",
                b"Content-Length: 1\r\nContent-Length: 2\r\n",
            ),
            |a, _| (400..500).contains(&a.status),
        ),
        (
            "two Range headers",
            request(
                "GET",
                file.as_bytes(),
                b"Range: bytes=0-0\r\nRange: bytes=1-1\r\n",
            ),
            |a, data| a.status == 200 && a.body == data || a.status == 400,
        ),
        (
            "a second, different token on a management route",
            request("GET", b"/v2/cache", b"X-Auth-Token: someone-else\r\n"),
            |a, _| (400..500).contains(&a.status),
        ),
        (
            "a second, different token on a download",
            request("GET", file.as_bytes(), b"X-Auth-Token: someone-else\r\n"),
            |a, _| (400..500).contains(&a.status),
        ),
        (
            "a header value that is not UTF-8",
            request("GET", file.as_bytes(), b"Range: bytes=\xff\xfe-\r\n"),
            |a, data| a.status == 200 && a.body == data || (400..500).contains(&a.status),
        ),
    ];
    for (what, raw, ok) in cases {
        let answer = send_raw(addr, &raw).await;
        let passed = ok(&answer, &target.data);
        check(what.to_owned(), &answer, passed);
    }

    // Bodies where none belongs, and wrong methods.
    for (method, path, extra) in [
        ("GET", "/v2/cache", "Content-Length: 5\r\n\r\nhello"),
        ("DELETE", "/v2/cache/x", "Content-Length: 5\r\n\r\nhello"),
        (
            "POST",
            "/v2/cache/prune",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
        ),
        ("GET", "/v2/cached_images", "Content-Length: 2\r\n\r\n{}"),
        ("POST", "/v2/cache/x", ""),
        ("PATCH", "/v2/cache", ""),
        ("TRACE", "/v2/cache/prune", ""),
        ("BREW", "/v2/cached_images", ""),
        ("POST", "/v2/queued_images/x", ""),
    ] {
        // `request` ends the head; a body goes after it.
        let (headers, body) = extra.split_once("\r\n\r\n").unwrap_or((extra, ""));
        let header_lines = match headers {
            "" => String::new(),
            lines => format!("{lines}\r\n"),
        };
        let mut raw = request(method, path.as_bytes(), header_lines.as_bytes());
        raw.extend_from_slice(body.as_bytes());
        let answer = send_raw(addr, &raw).await;
        let ok = (400..500).contains(&answer.status);
        check(format!("{method} {path} {}", headers.trim()), &answer, ok);
    }

    for failure in &failures {
        eprintln!("FAILED {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} hostile requests were mishandled",
        failures.len()
    );

    // Still serving, and nothing new on disk but what the cache may hold.
    let again = send_raw(addr, &request("GET", file.as_bytes(), b"")).await;
    assert_eq!(again.status, 200);
    assert!(again.body == target.data);
    let after = tree(root);
    assert_eq!(
        outside_db(&after, &db),
        outside_db(&before, &db),
        "{}: files appeared or vanished",
        target.name
    );
}

/// The first and last byte a 206 answer's `Content-Range` names.
fn content_range(head: &str) -> (usize, usize) {
    let line = head
        .lines()
        .find(|l| l.to_lowercase().starts_with("content-range:"))
        .unwrap();
    let range = line.split_whitespace().nth(2).unwrap();
    let (span, _) = range.split_once('/').unwrap();
    let (start, end) = span.split_once('-').unwrap();
    (start.parse().unwrap(), end.parse().unwrap())
}

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

#[cfg(feature = "server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caching_proxy_refuses_hostile_input() {
    let (upstream_dir, proxy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = start(upstream_dir.path(), &["--no-cache"]);
    let proxy = start_proxy(&upstream.url, proxy_dir.path());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let image = cached_image(&proxy, &upstream.url, &data).await;
    let target = Target {
        name: "caching_proxy",
        addr: addr_of(&proxy),
        server: proxy,
        image,
        data,
    };
    suite(&target, proxy_dir.path(), proxy_dir.path()).await;
    drop(upstream);
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
    // sixteen of them stay under two chunks each, half a copy of the image.
    assert!(
        grown < 32 << 20,
        "16 stalled downloads of a 64 MiB image grew the server by {} MiB",
        grown >> 20
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
