//! `PUT /v2/cache/{id}` with `X-Image-Cache-Nodes: K`: the image is queued on the K nodes of
//! the fleet that rendezvous hashing of its id picks (the same nodes from any node and from
//! `image-cache-manage queue-image --nodes K`), each asked with the caller's own token.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use http::header::HeaderValue;
use http::{Method, Response, StatusCode};
use tower_image_cache::layer::GlanceError;
use tower_image_cache::ImageCache;

use crate::placement::nodes_for;

/// The header naming how many nodes to queue an image on.
pub(crate) const X_IMAGE_CACHE_NODES: &str = "x-image-cache-nodes";

/// The answer's header naming the nodes the image was queued on.
const X_IMAGE_CACHE_QUEUED_ON: &str = "x-image-cache-queued-on";

/// How long the fleet's database and each node may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// What warming needs: the cache (its fleet) and a client of the other nodes.
#[derive(Clone)]
pub(crate) struct Warming {
    cache: ImageCache,
    http: reqwest::Client,
}

impl Warming {
    pub(crate) fn new(cache: &ImageCache) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(PATIENCE)
            .no_proxy()
            .build()
            .map_err(|err| format!("the client of the fleet's nodes cannot be set up: {err}"))?;
        Ok(Warming {
            cache: cache.clone(),
            http,
        })
    }
}

/// Queues on K nodes when asked to; any other request goes on.
pub(crate) async fn queue_on_nodes(
    State(warming): State<Warming>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let id = match (
        request.method(),
        request.uri().path().strip_prefix("/v2/cache/"),
    ) {
        (&Method::PUT, Some(id)) if !id.is_empty() && !id.contains('/') => id.to_owned(),
        _ => return next.run(request).await,
    };
    let Some(asked) = request.headers().get(X_IMAGE_CACHE_NODES).cloned() else {
        return next.run(request).await;
    };
    let token = request.headers().get("x-auth-token").cloned();
    let (mut parts, body) = request.into_parts();
    let accepts = parts.headers.clone();
    let refuse = |status: StatusCode, message: String| {
        GlanceError::new(status, message)
            .response_for::<Body>(&accepts)
            .map(Body::new)
    };
    let Some(k) = asked
        .to_str()
        .ok()
        .and_then(|k| k.trim().parse::<usize>().ok())
        .filter(|k| *k > 0)
    else {
        let message = "X-Image-Cache-Nodes must be a number of nodes, 1 or more.".to_owned();
        return refuse(StatusCode::BAD_REQUEST, message);
    };
    let Some(fleet) = warming.cache.fleet() else {
        let message = "X-Image-Cache-Nodes needs a fleet: this node's image_cache_driver is \
                       not centralized_db. Queue the image without the header."
            .to_owned();
        return refuse(StatusCode::CONFLICT, message);
    };
    let nodes = match tokio::time::timeout(PATIENCE, fleet.nodes()).await {
        Ok(Ok(nodes)) if !nodes.is_empty() => nodes,
        Ok(Ok(_)) => {
            let message = "The fleet's database lists no cache nodes yet.".to_owned();
            return refuse(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        Ok(Err(err)) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{err}. Try again later."),
            )
        }
        Err(_) => {
            let message = "The fleet's database did not answer in time. Try again later.";
            return refuse(StatusCode::SERVICE_UNAVAILABLE, message.to_owned());
        }
    };
    let chosen = nodes_for(&nodes, &id, k);
    let this_node = fleet.this_node().map(str::to_owned);
    parts.headers.remove(X_IMAGE_CACHE_NODES);
    let mut own = Some(Request::from_parts(parts, body));
    for node in &chosen {
        // One node at a time: a caller this fleet refuses is refused by the first, and makes
        // no other node work.
        let status = if this_node.as_deref() == Some(node.as_str()) {
            let request = own.take().expect("this node is chosen once");
            next.clone().run(request).await.status()
        } else {
            let url = format!("{}/v2/cache/{id}", node.trim_end_matches('/'));
            let mut put = warming.http.put(&url).header("accept", "application/json");
            if let Some(token) = &token {
                put = put.header("x-auth-token", token);
            }
            match put.send().await {
                Ok(answer) => answer.status(),
                Err(err) => {
                    tracing::warn!(image = %id, %node, %err, "a node to warm could not be reached");
                    let message = format!(
                        "The node {node} could not be reached to queue image {id}; the nodes \
                         before it have it queued. Try again later."
                    );
                    return refuse(StatusCode::BAD_GATEWAY, message);
                }
            }
        };
        if !status.is_success() {
            let message = format!("The node {node} answered {status} to queueing image {id}.");
            return refuse(status, message);
        }
    }
    tracing::info!(image = %id, nodes = ?chosen, "queued on the fleet's nodes for it");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    let queued_on = HeaderValue::from_str(&chosen.join(", ")).expect("node URLs are header text");
    response
        .headers_mut()
        .insert(X_IMAGE_CACHE_QUEUED_ON, queued_on);
    response
}
