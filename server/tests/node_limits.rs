//! The cache server's edge, over real sockets: what the upstream is told of the client (HTTPS,
//! its address, spoofed headers), the URLs the client is given back, `OPTIONS *`, HTTP/2, the
//! connection limit's 503, and idle connections that would exhaust the node's file descriptors.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::example::{start_logged, Server};
use common::raw_upstream::{Mode, RawUpstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node in front of a polite upstream with a 1000-byte image, its `[cache_server]` section
/// adding `lines`, started after the shell command `shell`: the upstream and the cache's
/// directory (kept while the test runs), the node and its log.
async fn polite_node(
    lines: &str,
    shell: &str,
) -> (RawUpstream, tempfile::TempDir, Server, Arc<Mutex<String>>) {
    let upstream = RawUpstream::start(common::image_data(1000), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let (node, log) = start_logged(
        &upstream.url(),
        &dir.path().join("cache"),
        lines,
        shell,
        &[],
    );
    (upstream, dir, node, log)
}

/// Sends `request` (which asks for `Connection: close`) and reads the answer to its end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn tls_exchange(addr: &str, ca: &Path, request: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    exchange(&mut tls, request).await
}

fn addr_of(url: &str) -> String {
    url.split("://").nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_node_tells_the_upstream_https_and_the_client_its_own_https_urls() {
    let upstream = RawUpstream::start(common::image_data(1000), Mode::Polite).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::test_ca(dir.path());
    let (node, _log) = start_logged(
        &upstream.url(),
        &dir.path().join("cache"),
        "",
        "",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let addr = addr_of(&node.url);
    let port = addr.rsplit(':').next().unwrap().to_owned();

    // A client that claims another address and scheme: not a trusted proxy, so not believed.
    let versions = tls_exchange(
        &addr,
        &ca,
        &format!(
            "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nX-Forwarded-For: 6.6.6.6\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(versions.starts_with("HTTP/1.1 300"), "{versions}");
    assert!(
        versions.contains(&format!("\"href\": \"https://localhost:{port}/v2/\"")),
        "the versions document names the node by its real scheme: {versions}"
    );
    let moved = tls_exchange(
        &addr,
        &ca,
        &format!("GET /v2/moved HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        moved
            .to_ascii_lowercase()
            .contains(&format!("location: https://localhost:{port}/v2/images")),
        "{moved}"
    );

    let seen = upstream.seen.lock().unwrap().clone();
    let root = seen.iter().find(|s| s.path == "/").unwrap();
    assert_eq!(root.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        root.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "{root:?}"
    );
    assert_eq!(
        root.header("x-forwarded-host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert!(seen.iter().all(|s| s.header("forwarded").is_none()));
    assert!(
        !format!("{seen:?}").contains("6.6.6.6"),
        "a spoofed address went upstream: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_load_balancer_s_forwarding_headers_are_kept() {
    let (upstream, _dir, node, _log) = polite_node("trusted_proxies = 127.0.0.0/8\n", "").await;
    let mut tcp = TcpStream::connect(addr_of(&node.url)).await.unwrap();
    let versions = exchange(
        &mut tcp,
        "GET / HTTP/1.1\r\nHost: node:9292\r\nX-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: images.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        versions.contains("\"href\": \"https://images.example.com/v2/\""),
        "{versions}"
    );
    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_star_is_answered_by_the_node_and_http2_is_not_offered() {
    let (upstream, _dir, node, _log) = polite_node("", "").await;
    let addr = addr_of(&node.url);

    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let answer = exchange(
        &mut tcp,
        "OPTIONS * HTTP/1.1\r\nHost: node\r\nX-Auth-Token: secret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
    assert!(
        upstream.seen.lock().unwrap().is_empty(),
        "OPTIONS * went upstream"
    );

    // An HTTP/2 client with prior knowledge: refused at once, never a 502 per request.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let h2 = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await;
    match h2 {
        Err(_) => {}
        Ok((mut sender, connection)) => {
            tokio::spawn(connection);
            let request = http::Request::get(format!("http://{addr}/v2/images"))
                .body(http_body_util::Empty::new())
                .unwrap();
            let sent =
                tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await;
            assert!(
                !matches!(&sent, Ok(Ok(r)) if r.status() == 502),
                "HTTP/2 accepted, then 502"
            );
            assert!(
                matches!(sent, Ok(Err(_))),
                "HTTP/2 must be refused: {sent:?}"
            );
        }
    }
    // HTTP/1.1 is served as before.
    assert_eq!(
        reqwest::get(format!("{}/healthz", node.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_requests_get_503_with_retry_after() {
    let (_upstream, _dir, node, log) = polite_node("max_connections = 2\n", "").await;
    let addr = addr_of(&node.url);
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let answer = exchange(
        &mut third,
        "GET /healthz HTTP/1.1\r\nHost: node\r\nAccept: application/json\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(lower.contains("max_connections"), "{answer}");
    // The log is gathered from the node's stderr by a thread of its own: wait for the line.
    let logged = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("at max_connections") {
        assert!(Instant::now() < logged, "the saturation is not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    // Once the held ones close, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let answer = exchange(
            &mut tcp,
            "GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_do_not_take_a_node_with_1024_fds_offline() {
    let (_upstream, _dir, node, _log) = polite_node("client_timeout = 2\n", "ulimit -n 1024").await;
    let addr = addr_of(&node.url);
    // Idle, unauthenticated connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => idle.push(stream),
            _ => break,
        }
    }
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    // The node closes them at client_timeout and serves again.
    let started = Instant::now();
    let health = loop {
        let attempt = tokio::time::timeout(Duration::from_secs(3), async {
            let mut tcp = TcpStream::connect(&addr).await.ok()?;
            Some(
                exchange(
                    &mut tcp,
                    "GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n",
                )
                .await,
            )
        })
        .await;
        if let Ok(Some(answer)) = attempt {
            if answer.starts_with("HTTP/1.1 200") {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node stayed offline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(health < Duration::from_secs(15), "{health:?}");
    // Every idle connection was closed by the node (read: end of stream, or reset).
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        idle.len(),
        "{closed} of {} idle connections were closed",
        idle.len()
    );
}
