//! The floor under the cache's small hits: an axum server that answers every request with the
//! same 4 KiB from memory, with the headers a cache hit carries, and does nothing else.
//!
//! ```text
//! cargo run --release --example floor_server -- --bind 127.0.0.1:9595
//! wrk -t2 -c16 -d6s http://127.0.0.1:9595/v2/images/any/file
//! ```
//!
//! It is served as the example image server serves its layers (`axum::serve`, tokio's default
//! runtime), so `benches/compare.py table` can set the cache's 4 KiB hits against it as well as
//! against nginx: what any hyper server pays on the machine per request (the socket, hyper's
//! parsing and encoding, tokio's wake-ups) is this server's cost; the rest of a hit's cost is
//! the cache's (its routing, access check, catalog lookup, metrics, log span and headers).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Request, Response};

#[derive(Parser, Debug)]
#[command(about = "Answers every request with 4 KiB from memory (a floor for benchmarks)")]
struct Args {
    /// Listen address (port 0 picks one; printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9595")]
    bind: SocketAddr,
}

/// The headers of a cache hit on a 4 KiB image, as the example image server sends them.
const HIT_HEADERS: [(header::HeaderName, &str); 6] = [
    (header::ACCEPT_RANGES, "bytes"),
    (header::ETAG, "\"bb9807f8e91ce8783045e574e4248863\""),
    (
        header::HeaderName::from_static("content-md5"),
        "bb9807f8e91ce8783045e574e4248863",
    ),
    (header::CONTENT_TYPE, "application/octet-stream"),
    (header::CACHE_CONTROL, "no-transform"),
    (header::HeaderName::from_static("x-cache-status"), "HIT"),
];

fn answer(body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    for (name, value) in HIT_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let body = Bytes::from(vec![0x5a; 4096]);
    let service = tower::service_fn(move |_: Request<Body>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(answer(body)) }
    });
    let listener = match tokio::net::TcpListener::bind(args.bind).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("floor_server: cannot listen on {}: {err}", args.bind);
            return std::process::ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(err) => {
            eprintln!("floor_server: cannot read the listening address: {err}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Err(err) = axum::serve(listener, tower::make::Shared::new(service)).await {
        eprintln!("floor_server: the server failed: {err}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
