//! The hostile-input suite: every request written byte for byte (no client library normalises
//! it), run against one server (the example image server, the caching proxy) by the tests of
//! each. Each gets a clear 4xx, or the answer SPEC §3 says passes through; nothing answers 5xx or
//! drops the connection; nothing is created outside `image_cache_dir` and nothing but verified
//! images inside it; the server keeps serving.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::example::{upload, Server};

pub const ADMIN: &str = "admin-secret";

/// Whether an answer is right, given the cached image's bytes.
pub type Judge = fn(&Answer, &[u8]) -> bool;

/// What came back for one raw request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

pub fn addr_of(server: &Server) -> SocketAddr {
    server.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Sends `request` as given (it must ask for `Connection: close`) and reads the whole answer.
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> Answer {
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
pub fn request(method: &str, target: &[u8], extra: &[u8]) -> Vec<u8> {
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

pub fn hostile_ids() -> Vec<Vec<u8>> {
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

pub fn with_id(prefix: &str, id: &[u8], suffix: &str) -> Vec<u8> {
    let mut target = prefix.as_bytes().to_vec();
    target.extend_from_slice(id);
    target.extend_from_slice(suffix.as_bytes());
    target
}

/// Everything under `root`, as relative paths.
pub fn tree(root: &Path) -> BTreeSet<PathBuf> {
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
pub fn outside_db(tree: &BTreeSet<PathBuf>, db: &Path) -> BTreeSet<PathBuf> {
    tree.iter()
        .filter(|p| !p.starts_with(db))
        .cloned()
        .collect()
}

pub struct Target {
    pub name: &'static str,
    pub server: Server,
    pub addr: SocketAddr,
    /// An image cached by this server, and its bytes.
    pub image: String,
    pub data: Vec<u8>,
}

pub async fn cached_image(server: &Server, upstream_url: &str, data: &[u8]) -> String {
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
pub async fn suite(target: &Target, root: &Path, cache_dir: &Path) {
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
pub fn content_range(head: &str) -> (usize, usize) {
    let line = head
        .lines()
        .find(|l| l.to_lowercase().starts_with("content-range:"))
        .unwrap();
    let range = line.split_whitespace().nth(2).unwrap();
    let (span, _) = range.split_once('/').unwrap();
    let (start, end) = span.split_once('-').unwrap();
    (start.parse().unwrap(), end.parse().unwrap())
}
