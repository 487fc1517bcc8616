//! What each management route does.

use http::{Request, Response, StatusCode};
use tower::ServiceExt;
use tower_service::Service;

use super::access::Decision;
use super::op::{ClearTarget, Op};
use super::prefetch::PrefetchHandle;
#[cfg(feature = "centralized-db")]
use super::response::with_filling;
use super::response::{empty, json, Answer, ErrorFormat, Refusal};
use super::routes::Endpoint;
use super::shared::Shared;
use crate::body::ResponseBody;
use crate::image_meta::{read_document, ImageState};
use crate::store::{ImageCache, StoreError};
use crate::ImageId;

/// The header naming the node that answered a management request (its
/// `worker_self_reference_url`), where it has one.
pub const NODE_HEADER: &str = "x-image-cache-node";

/// Runs a store operation on the blocking pool; a failure becomes a 500 with its reason.
async fn store<T>(
    cache: &ImageCache,
    work: impl FnOnce(&ImageCache) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal>
where
    T: Send + 'static,
{
    cache
        .blocking(work)
        .await
        .map_err(|err| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}

/// Answers `op`; `api` is the service the layer's own requests go to. The answer is in `B`, the
/// body type of the service the layer wraps.
pub(crate) async fn answer<S, ReqBody, ResBody, B>(
    op: Op,
    shared: &Shared,
    inner: S,
    prefetcher: &PrefetchHandle,
    format: ErrorFormat,
) -> Result<Answer<B>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    let answered = match op {
        // The one route that asks the wrapped service, and so the one that can fail with its error.
        Op::Queue(id) => queue(shared, inner, id, prefetcher).await?,
        // Glance's legacy route queues unchecked; here it is checked as `PUT /v2/cache/{id}` is
        // (20,000 bogus ids once made 1.44 M warnings), and answered in its own form.
        Op::LegacyQueue(id) => queue::<_, _, _, B>(shared, inner, id, prefetcher)
            .await?
            .map(|_| json(StatusCode::OK, &())),
        Op::Delete(id) => delete(shared, inner, id).await?,
        Op::Nodes(id) => nodes(shared, inner, id).await?,
        op => manage(op, shared, prefetcher).await,
    };
    let mut answer = answered.unwrap_or_else(|refusal| refusal.into_response(format));
    // Which node answered, so a tool given a load balancer's address can tell it is not one.
    if let Some(node) = shared.cache.config().worker_self_reference_url.as_deref() {
        if let Ok(value) = http::HeaderValue::from_str(node) {
            answer.headers_mut().insert(NODE_HEADER, value);
        }
    }
    Ok(answer)
}

async fn queue<S, ReqBody, ResBody, B>(
    shared: &Shared,
    inner: S,
    id: ImageId,
    prefetcher: &PrefetchHandle,
) -> Result<Result<Answer<B>, Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    let cache = &shared.cache;
    if cache.is_cached(&id) {
        return Ok(Ok(empty(StatusCode::ACCEPTED)));
    }
    if let Err(refusal) = check_image(shared, inner, &id).await? {
        return Ok(Err(refusal));
    }
    if let Err(failure) = store(cache, move |c| c.queue_image(&id)).await {
        return Ok(Err(failure));
    }
    prefetcher.wake();
    Ok(Ok(empty(StatusCode::ACCEPTED)))
}

/// `DELETE /v2/cache/{id}`: from the cache and the queue; as Glance, 204 also for an image that
/// exists but is in neither, and 404 for one the image API does not know.
async fn delete<S, ReqBody, ResBody, B>(
    shared: &Shared,
    inner: S,
    id: ImageId,
) -> Result<Result<Answer<B>, Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    let cache = &shared.cache;
    let filling = cache.is_filling(&id);
    let removing = id.clone();
    let removed = store(cache, move |c| {
        Ok((
            c.delete_cached_image(&removing)?,
            c.delete_queued_image(&removing)?,
        ))
    })
    .await;
    let (cached, queued) = match removed {
        Ok(removed) => removed,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if cached || queued || filling {
        return Ok(Ok(empty(StatusCode::NO_CONTENT)));
    }
    Ok(match ask_image(shared, inner, &id).await? {
        Ok(_) => Ok(empty(StatusCode::NO_CONTENT)),
        Err(refusal) => Err(refusal),
    })
}

/// `GET /v2/cache/nodes/{id}`: the URLs of the fleet's nodes holding the image, from the
/// central database; as Glance, 409 when the driver is not `centralized_db` and 404 for an
/// image the image API does not know.
async fn nodes<S, ReqBody, ResBody, B>(
    shared: &Shared,
    inner: S,
    id: ImageId,
) -> Result<Result<Answer<B>, Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    #[cfg(feature = "centralized-db")]
    let fleet = shared.cache.fleet();
    #[cfg(not(feature = "centralized-db"))]
    let fleet: Option<std::convert::Infallible> = None;
    let Some(fleet) = fleet else {
        let refusal = Refusal::new(StatusCode::CONFLICT, "Centralized caching is not enabled");
        return Ok(Err(refusal));
    };
    if let Err(refusal) = ask_image(shared, inner, &id).await? {
        return Ok(Err(refusal));
    }
    #[cfg(feature = "centralized-db")]
    return Ok(
        match (
            fleet.nodes_caching(&id).await,
            fleet.nodes_filling(&id).await,
        ) {
            (Ok(urls), Ok(filling)) => {
                // Glance's body (the holders); the nodes reading the image now, beside it.
                Ok(with_filling(json(StatusCode::OK, &urls), &filling))
            }
            (Err(err), _) | (_, Err(err)) => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                err.to_string(),
            )),
        },
    );
    #[cfg(not(feature = "centralized-db"))]
    match fleet {}
}

/// `GET /v2/cache/nodes` (this crate's): every node of the fleet, `{"nodes": [url, ...]}`, so a
/// tool can act on all of them through any one.
async fn node_list<B>(cache: &ImageCache) -> Result<Answer<B>, Refusal> {
    #[cfg(feature = "centralized-db")]
    if let Some(fleet) = cache.fleet() {
        return match fleet.nodes().await {
            Ok(nodes) => Ok(json(StatusCode::OK, &serde_json::json!({ "nodes": nodes }))),
            Err(err) => Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                err.to_string(),
            )),
        };
    }
    let _ = cache;
    Err(Refusal::new(
        StatusCode::CONFLICT,
        "Centralized caching is not enabled",
    ))
}

async fn manage<B>(
    op: Op,
    shared: &Shared,
    prefetcher: &PrefetchHandle,
) -> Result<Answer<B>, Refusal> {
    let cache = &shared.cache;
    Ok(match op {
        Op::List { in_progress } => {
            let (cached, queued) =
                store(cache, |c| Ok((c.cached_images(), c.queued_images()?))).await?;
            let queued: Vec<&str> = queued.iter().map(ImageId::as_str).collect();
            // Exactly Glance's keys unless asked: python-glanceclient prints every key as rows.
            let mut listing =
                serde_json::json!({ "cached_images": cached, "queued_images": queued });
            if in_progress {
                listing["in_progress"] = serde_json::json!(cache.fills_in_progress());
            }
            json(StatusCode::OK, &listing)
        }
        Op::Queue(_) | Op::LegacyQueue(_) | Op::Delete(_) | Op::Nodes(_) => {
            unreachable!("answered with the image API")
        }
        Op::Clear(target) => {
            store(cache, move |c| {
                if target != ClearTarget::Queue {
                    c.delete_all_cached_images()?;
                }
                if target != ClearTarget::Cache {
                    c.delete_all_queued_images()?;
                }
                Ok(())
            })
            .await?;
            empty(StatusCode::NO_CONTENT)
        }
        Op::Clean => json(StatusCode::OK, &store(cache, ImageCache::clean).await?),
        Op::Prune => json(StatusCode::OK, &store(cache, ImageCache::prune).await?),
        Op::Prefetch => {
            prefetcher.wake();
            empty(StatusCode::ACCEPTED)
        }
        Op::NodeList => node_list(cache).await?,
        Op::LegacyListCached => json(
            StatusCode::OK,
            &serde_json::json!({ "cached_images": cache.cached_images() }),
        ),
        Op::LegacyDeleteCached(id) => {
            store(cache, move |c| c.delete_cached_image(&id)).await?;
            json(StatusCode::OK, &())
        }
        Op::LegacyDeleteAllCached => {
            let deleted = store(cache, ImageCache::delete_all_cached_images).await?;
            json(
                StatusCode::OK,
                &serde_json::json!({ "num_deleted": deleted }),
            )
        }
        Op::LegacyListQueued => {
            let queued = store(cache, ImageCache::queued_images).await?;
            let queued: Vec<&str> = queued.iter().map(ImageId::as_str).collect();
            json(
                StatusCode::OK,
                &serde_json::json!({ "queued_images": queued }),
            )
        }
        Op::LegacyDeleteQueued(id) => {
            store(cache, move |c| c.delete_queued_image(&id)).await?;
            json(StatusCode::OK, &())
        }
        Op::LegacyDeleteAllQueued => {
            let deleted = store(cache, ImageCache::delete_all_queued_images).await?;
            json(
                StatusCode::OK,
                &serde_json::json!({ "num_deleted": deleted }),
            )
        }
    })
}

/// The image as the wrapped service tells the cache's service identity: its state, or 404 when
/// it does not know it.
async fn ask_image<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: S,
    id: &ImageId,
) -> Result<Result<ImageState, Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    let build = || shared.metadata.get_request(id);
    let asked = crate::layer::within(shared.response_timeout, shared.identity.send(inner, build));
    let Some(sent) = asked.await else {
        let limit = shared.response_timeout.unwrap_or_default().as_secs_f64();
        let message = format!("The image API did not answer within {limit} s. Try again later.");
        return Ok(Err(Refusal::new(StatusCode::GATEWAY_TIMEOUT, message)));
    };
    let response = match sent? {
        Ok(response) => response,
        Err(reason) => {
            shared.cache.metrics().keystone_failure("service_login");
            let reason = reason.to_string();
            return Ok(Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason)));
        }
    };
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        let message = format!("Image {id} not found.");
        return Ok(Err(Refusal::new(StatusCode::NOT_FOUND, message)));
    }
    if status != StatusCode::OK {
        let reason = format!("the image API answered {status} to the cache's service identity");
        return Ok(Err(Refusal::new(StatusCode::BAD_GATEWAY, &reason)));
    }
    let document = read_document(response.into_body()).await;
    Ok(Ok(
        document.map_or(ImageState::Unreadable, |d| ImageState::read(&d))
    ))
}

/// Before a policy refusal (`decision`) of `PUT` or `DELETE /v2/cache/{id}`: Glance first looks
/// the image up as the caller, so a caller who may not see the image learns that it is not found
/// (404), not that they may not manage the cache (403), whatever the cache holds. `None` when
/// the policy's refusal stands.
pub(crate) async fn hidden_from_caller<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: S,
    decision: &Decision,
    endpoint: &Endpoint<'_>,
    parts: &http::request::Parts,
) -> Result<Option<Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Default,
{
    let forbidden = matches!(
        decision,
        Decision::Forbidden | Decision::ForbiddenBecause(_)
    );
    let (true, Endpoint::CacheImage(raw)) = (forbidden, endpoint) else {
        return Ok(None);
    };
    let Ok(id) = ImageId::new(raw) else {
        return Ok(None);
    };
    // What the cache holds never decides the answer (for a DELETE as for any other method):
    // only the image API's view of the caller does, so a refusal tells nothing of the cache.
    let mut request = shared.metadata.get_request(&id);
    *request.headers_mut() = crate::layer::caller_headers(&parts.headers);
    let status = inner.oneshot(request).await?.status();
    Ok((status == StatusCode::NOT_FOUND)
        .then(|| Refusal::new(StatusCode::NOT_FOUND, format!("Image {id} not found."))))
}

/// `PUT /v2/cache/{id}`: the image must exist (404) and be active (400), as the wrapped
/// service tells the cache's service identity.
async fn check_image<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: S,
    id: &ImageId,
) -> Result<Result<(), Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Default,
    ResBody: ResponseBody,
{
    let state = match ask_image(shared, inner, id).await? {
        Ok(state) => state,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let max_size = shared.cache.config().image_cache_max_size;
    Ok(match state {
        ImageState::Active(meta) if meta.size.is_some_and(|size| size > max_size) => {
            Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "The image ({} bytes) is larger than the whole cache (image_cache_max_size = \
                     {max_size} bytes), so it cannot be cached; raise image_cache_max_size to \
                     cache it.",
                    meta.size.unwrap_or_default()
                ),
            ))
        }
        ImageState::Active(_) => Ok(()),
        ImageState::Inactive(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Only images with status active can be targeted for queueing",
        )),
        ImageState::Unreadable => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "the image API's answer has no image status",
        )),
    })
}
