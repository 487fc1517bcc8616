//! Both layers on a plain hyper 1 server (hyper-util's connection builder, no framework), in
//! front of a tiny in-memory image API written as a `tower::service_fn`.
//!
//! ```text
//! cargo run --example hyper_server -- --bind 127.0.0.1:9494 --admin-token secret
//! curl -sD - -o /dev/null -H 'X-Auth-Token: secret' http://127.0.0.1:9494/v2/images/demo/file
//! ```
//!
//! hyper hands the service a `Request<Incoming>`. The cache builds requests of its own (the
//! access check's metadata request, the prefetcher's downloads), which need an empty body of the
//! same type; `Incoming` has none, so each request's body is boxed first
//! (`http_body_util::combinators::BoxBody` has an empty value: it is `Default`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use md5::Digest;
use tower::ServiceExt;
use tower_image_cache::manage::{CacheManageLayer, StaticToken};
use tower_image_cache::{CacheConfig, CacheLayer, ImageCache, InnerMetadata};

#[derive(Parser, Debug)]
#[command(about = "tower-image-cache on a plain hyper server")]
struct Args {
    /// Listen address (port 0 picks one; printed as `listening on http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9494")]
    bind: SocketAddr,
    /// The cache's directory (image_cache_dir).
    #[arg(long, default_value = "./hyper-server-cache")]
    cache_dir: PathBuf,
    /// Glance-style configuration files (`glance-api.conf`: `[DEFAULT] image_cache_dir`,
    /// `image_cache_driver = centralized_db`, `worker_self_reference_url`, `[database]
    /// connection`, ...); repeatable, later files win. They replace --cache-dir.
    #[arg(long = "config-file", value_name = "FILE")]
    config_files: Vec<PathBuf>,
    /// The one token the API and the management routes accept.
    #[arg(long, default_value = "admin-secret")]
    admin_token: String,
}

/// The request body every layer sees: hyper's, boxed.
type ReqBody = BoxBody<Bytes, hyper::Error>;

/// The image API: two images in memory, `demo` (4 MiB) and `small`.
struct Images {
    token: String,
    data: HashMap<&'static str, Bytes>,
}

impl Images {
    fn answer(&self, request: &Request<ReqBody>) -> Response<Full<Bytes>> {
        let respond = |status: StatusCode, body: Bytes| {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            response
        };
        let token = request.headers().get("x-auth-token");
        if token.is_none_or(|t| t.as_bytes() != self.token.as_bytes()) {
            return respond(StatusCode::UNAUTHORIZED, Bytes::from_static(b"401"));
        }
        let path = request.uri().path();
        let (id, file) = match path.strip_prefix("/v2/images/") {
            Some(rest) => match rest.strip_suffix("/file") {
                Some(id) => (id, true),
                None => (rest, false),
            },
            None => return respond(StatusCode::NOT_FOUND, Bytes::from_static(b"404")),
        };
        let Some(data) = self.data.get(id) else {
            return respond(StatusCode::NOT_FOUND, Bytes::from_static(b"404"));
        };
        let checksum = hex::encode(md5::Md5::digest(data));
        if file {
            let mut response = respond(StatusCode::OK, data.clone());
            response.headers_mut().insert(
                "content-md5",
                checksum.parse().expect("hex is a header value"),
            );
            response
        } else {
            let document = serde_json::json!({
                "id": id, "status": "active", "size": data.len(), "checksum": checksum,
            });
            respond(StatusCode::OK, Bytes::from(document.to_string()))
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(reason) = run(args).await {
        eprintln!("hyper_server: {reason}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = if args.config_files.is_empty() {
        CacheConfig::new(&args.cache_dir)
    } else {
        CacheConfig::from_files(&args.config_files).map_err(|err| err.to_string())?
    };
    let dir = config.image_cache_dir.clone();
    let cache = ImageCache::open(config)
        .map_err(|err| format!("cannot open the cache at {}: {err}", dir.display()))?;
    let images = Arc::new(Images {
        token: args.admin_token.clone(),
        data: HashMap::from([
            (
                "demo",
                Bytes::from((0..4u32 << 20).map(|i| i as u8).collect::<Vec<u8>>()),
            ),
            ("small", Bytes::from_static(b"a small image")),
        ]),
    });
    let api = tower::service_fn(move |request: Request<ReqBody>| {
        let images = Arc::clone(&images);
        async move { Ok::<_, Infallible>(images.answer(&request)) }
    });
    let token = args.admin_token.as_str();
    let service = tower::ServiceBuilder::new()
        .layer(CacheManageLayer::new(cache.clone(), StaticToken::new(token)).service_token(token))
        .layer(CacheLayer::new(cache, InnerMetadata::new()))
        .service(api);
    service.start_prefetcher::<ReqBody, _>();

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    println!("listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("hyper_server: a connection could not be accepted: {err}");
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
                service.clone().oneshot(request.map(BodyExt::boxed))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), hyper_service)
                .await;
        });
    }
}
