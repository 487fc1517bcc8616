//! A cache node in front of an existing image API: a reverse proxy wrapped in both layers, so
//! cache nodes can be added in front of real Glance servers to scale image reads.
//!
//! ```text
//! cargo run --release --example caching_proxy -- --upstream http://glance:9292 \
//!     --bind 0.0.0.0:9393 --cache-dir /var/lib/image-cache --service-token ADMIN --manage-token OPS
//! ```
//!
//! Everything but image downloads passes through as it is (status, headers, streaming bodies).
//! Hits ask the upstream for the image's metadata with the caller's own token first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use axum::Router;
use clap::Parser;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

#[derive(Parser, Debug)]
#[command(about = "A caching reverse proxy in front of an image API")]
struct Args {
    /// The image API to cache, e.g. http://glance:9292.
    #[arg(long)]
    upstream: Uri,
    /// Listen address (port 0 picks one; printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9393")]
    bind: SocketAddr,
    /// The cache's directory (image_cache_dir), unless a --config-file names one.
    #[arg(long, default_value = "./caching-proxy-cache")]
    cache_dir: PathBuf,
    /// The identity (X-Auth-Token) the prefetcher and the queue's existence check use upstream.
    #[arg(long)]
    service_token: Option<String>,
    /// Who may call the management routes (X-Auth-Token); without it they answer 403 to all.
    #[arg(long)]
    manage_token: Option<String>,
    /// A glance-style configuration file; repeatable, later files win.
    #[arg(long = "config-file", value_name = "FILE")]
    config_files: Vec<PathBuf>,
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Forwards requests to the upstream over a pooled connection.
#[derive(Clone)]
struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    fn new(base: Uri) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Upstream { base, client }
    }

    async fn forward(self, mut request: Request<Body>) -> Result<Response<Body>, Infallible> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{}", self.base.to_string().trim_end_matches('/'), path);
        *request.uri_mut() = match uri.parse() {
            Ok(uri) => uri,
            Err(err) => return Ok(bad_gateway(&format!("cannot forward to {uri}: {err}"))),
        };
        strip_hop_by_hop(request.headers_mut());
        if let Some(authority) = self
            .base
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, authority);
        }
        match self.client.request(request).await {
            Ok(response) => {
                let mut response = response.map(Body::new);
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Err(err) => Ok(bad_gateway(&format!(
                "the upstream image API at {} is unreachable: {err}",
                self.base
            ))),
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .map(|h| h.as_str().to_owned())
        .chain(named)
        .chain(["keep-alive".to_owned()])
    {
        headers.remove(name.as_str());
    }
}

fn bad_gateway(reason: &str) -> Response<Body> {
    let body =
        serde_json::json!({ "error": { "code": 502, "title": "Bad Gateway", "message": reason } });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.upstream.authority().is_none() {
        return Err(format!(
            "--upstream {} needs a host, e.g. http://glance:9292",
            args.upstream
        )
        .into());
    }
    let config = if args.config_files.is_empty() {
        CacheConfig::new(&args.cache_dir)
    } else {
        CacheConfig::from_files(&args.config_files)?
    };
    let cache = ImageCache::open(config)?;
    let upstream = Upstream::new(args.upstream.clone());
    let proxy = tower::service_fn(move |request: Request<Body>| upstream.clone().forward(request));

    // Without --manage-token nobody may manage this node's cache.
    let manage_token = args.manage_token.clone().unwrap_or_default();
    let mut manage = CacheManageLayer::new(cache.clone(), StaticToken::new(manage_token));
    if let Some(token) = &args.service_token {
        manage = manage.service_token(token);
    }
    let service = tower::ServiceBuilder::new()
        .layer(manage)
        .layer(CacheLayer::new(cache, InnerMetadata::new()))
        .service(proxy);
    // What the previous run left queued is fetched now, not with the first request.
    service.start_prefetcher::<Body, _>();
    let app = Router::new().fallback_service(service);

    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("caching {} ", args.upstream);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
