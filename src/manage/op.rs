//! Which management operation a request asks for, once it passed policy, method, body and id
//! checks ([`admit`]).

use http::{header, request, HeaderMap, Method, StatusCode};

use super::access::Decision;
use super::response::Refusal;
use super::routes::Endpoint;
use super::shared::Shared;
use crate::ImageId;

/// A management request that passed policy, method, id and body checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET /v2/cache`; with `?in_progress=true` (this crate's), the fills in progress too.
    List {
        in_progress: bool,
    },
    Queue(ImageId),
    Delete(ImageId),
    Clear(ClearTarget),
    Clean,
    Prune,
    Prefetch,
    Nodes(ImageId),
    NodeList,
    LegacyListCached,
    LegacyDeleteCached(ImageId),
    LegacyDeleteAllCached,
    LegacyQueue(ImageId),
    LegacyListQueued,
    LegacyDeleteQueued(ImageId),
    LegacyDeleteAllQueued,
}

/// `x-image-cache-clear-target` of `DELETE /v2/cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClearTarget {
    Both,
    Cache,
    Queue,
}

fn clear_target(headers: &HeaderMap) -> Result<ClearTarget, Refusal> {
    let Some(value) = headers.get("x-image-cache-clear-target") else {
        return Ok(ClearTarget::Both);
    };
    match value.to_str().map(str::trim) {
        Ok("" | "both") => Ok(ClearTarget::Both),
        Ok("cache") => Ok(ClearTarget::Cache),
        Ok("queue") => Ok(ClearTarget::Queue),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.",
        )),
    }
}

/// webob's 401 text, which Glance (keystonemiddleware) sends for a missing, unknown or expired
/// token.
const UNAUTHORIZED: &str = "This server could not verify that you are authorized to access the \
     document you requested. Either you supplied the wrong credentials (e.g., bad password), or \
     your browser does not understand how to supply the credentials required.";

/// The access check's refusal, if it refused: the policy comes first (as in Glance), so a
/// caller who may not manage the cache learns nothing more, not even that the method or the id
/// is wrong.
pub(crate) fn refusal(decision: &Decision, method: &Method) -> Option<Refusal> {
    // Glance's policy names for the cache routes, in its words.
    let action = match *method {
        Method::GET => "cache_list",
        Method::PUT => "cache_image",
        Method::DELETE => "cache_delete",
        _ => "manage_image_cache",
    };
    let (status, message) = match decision {
        Decision::Allow => return None,
        Decision::Forbidden => (
            StatusCode::FORBIDDEN,
            format!("You are not authorized to complete {action} action."),
        ),
        Decision::ForbiddenBecause(reason) => (StatusCode::FORBIDDEN, reason.clone()),
        Decision::Unauthenticated(reason) => {
            // The caller gets keystonemiddleware's page, as from Glance; the log says why.
            tracing::info!(%reason, "a management request was refused as unauthenticated");
            (StatusCode::UNAUTHORIZED, UNAUTHORIZED.to_owned())
        }
        Decision::Unavailable(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason.clone()),
    };
    Some(Refusal::new(status, message))
}

/// After the policy ([`refusal`]): the method, the body, and the id.
pub(crate) fn admit(
    shared: &Shared,
    endpoint: &Endpoint<'_>,
    parts: &request::Parts,
) -> Result<Op, Refusal> {
    if shared.wraps_single_routes() {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cache management is not wired to work here: CacheManageLayer wraps single routes \
             (axum's Router::layer or route_layer), so it cannot reach the image API; wrap the \
             whole router once instead",
        ));
    }
    if !endpoint.allowed().contains(&parts.method) {
        return Err(Refusal::method_not_allowed(
            &parts.method,
            endpoint.allowed(),
        ));
    }
    if carries_body(&parts.headers) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "this route takes no request body",
        ));
    }
    let id = |raw: &str| match ImageId::new(raw) {
        Ok(id) if shared.cache.is_reserved(&id) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("invalid image id: {id} is a name the cache uses for its own files"),
        )),
        Ok(id) => Ok(id),
        Err(err) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("invalid image id: {err}"),
        )),
    };
    let method = &parts.method;
    Ok(match endpoint {
        Endpoint::Cache if method == Method::GET => Op::List {
            in_progress: asks_for_in_progress(parts.uri.query()),
        },
        Endpoint::Cache => Op::Clear(clear_target(&parts.headers)?),
        Endpoint::CacheImage(raw) if method == Method::PUT => Op::Queue(id(raw)?),
        Endpoint::CacheImage(raw) => Op::Delete(id(raw)?),
        Endpoint::Clean => Op::Clean,
        Endpoint::Prune => Op::Prune,
        Endpoint::Prefetch => Op::Prefetch,
        Endpoint::Nodes(raw) => Op::Nodes(id(raw)?),
        Endpoint::NodeList => Op::NodeList,
        Endpoint::CachedImages if method == Method::GET => Op::LegacyListCached,
        Endpoint::CachedImages => Op::LegacyDeleteAllCached,
        Endpoint::CachedImage(raw) => Op::LegacyDeleteCached(id(raw)?),
        Endpoint::QueuedImages if method == Method::GET => Op::LegacyListQueued,
        Endpoint::QueuedImages => Op::LegacyDeleteAllQueued,
        Endpoint::QueuedImage(raw) if method == Method::PUT => Op::LegacyQueue(id(raw)?),
        Endpoint::QueuedImage(raw) => Op::LegacyDeleteQueued(id(raw)?),
    })
}

/// Whether the query asks for the fills in progress: `in_progress=true` (or `1`, or bare).
/// Glance's clients never send it, so what they print stays Glance's.
fn asks_for_in_progress(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "in_progress" && matches!(value, "" | "1" | "true" | "True" | "yes")
    })
}

fn carries_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0));
    length.unwrap_or(false) || headers.contains_key(header::TRANSFER_ENCODING)
}
