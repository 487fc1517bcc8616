//! What each management route does.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use tower::ServiceExt;
use tower_service::Service;

use super::service::Shared;
use crate::layer::{BoxError, CacheBody};
use crate::prefetch::PrefetchHandle;
use crate::store::{ImageCache, StoreError};
use crate::ImageId;

/// A management request that passed policy, method, id and body checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Queue(ImageId),
    Delete(ImageId),
    Clear(ClearTarget),
    Clean,
    Prune,
    Prefetch,
    Nodes(ImageId),
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

type Answer<B> = Response<CacheBody<B>>;

pub(crate) fn clear_target(headers: &HeaderMap) -> Result<ClearTarget, Refusal> {
    let Some(value) = headers.get("x-image-cache-clear-target") else {
        return Ok(ClearTarget::Both);
    };
    match value.to_str().map(str::trim) {
        Ok("" | "both") => Ok(ClearTarget::Both),
        Ok("cache") => Ok(ClearTarget::Cache),
        Ok("queue") => Ok(ClearTarget::Queue),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "x-image-cache-clear-target must be 'cache', 'queue', 'both' or empty",
        )),
    }
}

/// A management request answered with an error: a short JSON body in OpenStack's shape,
/// `{"error": {"code", "title", "message"}}`, which python-glanceclient reads.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    allow: Option<&'static [Method]>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            allow: None,
        }
    }

    /// A 405 naming the methods the route does answer.
    pub(crate) fn method_not_allowed(method: &Method, allow: &'static [Method]) -> Self {
        let message = format!("{method} is not allowed here");
        Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message,
            allow: Some(allow),
        }
    }

    pub(crate) fn into_response<B>(self) -> Answer<B> {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = serde_json::json!({ "error": { "code": self.status.as_u16(), "title": title, "message": self.message } });
        let mut response = json(self.status, &body);
        if let Some(allow) = self.allow {
            let allow = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let allow = HeaderValue::from_str(&allow).expect("method names are valid header text");
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

fn json<B>(status: StatusCode, value: &impl Serialize) -> Answer<B> {
    let body = serde_json::to_vec(value).expect("management answers serialize");
    let mut response = Response::new(CacheBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty<B>(status: StatusCode) -> Answer<B> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = status;
    response
}

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
        .map_err(|reason| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, reason))
}

#[derive(Serialize)]
struct InProgress {
    image_id: String,
    bytes_written: u64,
    expected_size: Option<u64>,
}

pub(crate) async fn answer<S, ReqBody, ResBody>(
    op: Op,
    shared: &Shared,
    inner: S,
    prefetcher: &PrefetchHandle,
) -> Result<Answer<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Default,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    let answered = match op {
        // The one route that asks the wrapped service, and so the one that can fail with its error.
        Op::Queue(id) => queue(shared, inner, id, prefetcher).await?,
        op => manage(op, shared, prefetcher).await,
    };
    Ok(answered.unwrap_or_else(Refusal::into_response))
}

async fn queue<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: S,
    id: ImageId,
    prefetcher: &PrefetchHandle,
) -> Result<Result<Answer<ResBody>, Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Default,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
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

async fn manage<B>(
    op: Op,
    shared: &Shared,
    prefetcher: &PrefetchHandle,
) -> Result<Answer<B>, Refusal> {
    let cache = &shared.cache;
    Ok(match op {
        Op::List => {
            let (cached, queued) =
                store(cache, |c| Ok((c.cached_images(), c.queued_images()?))).await?;
            let in_progress: Vec<InProgress> = cache
                .fills_in_progress()
                .into_iter()
                .map(|(id, bytes_written, expected_size)| InProgress {
                    image_id: id.to_string(),
                    bytes_written,
                    expected_size,
                })
                .collect();
            let queued: Vec<&str> = queued.iter().map(ImageId::as_str).collect();
            json(
                StatusCode::OK,
                &serde_json::json!({ "cached_images": cached, "queued_images": queued, "in_progress": in_progress }),
            )
        }
        Op::Queue(_) => unreachable!("answered by queue()"),
        Op::Delete(id) => {
            let filling = cache.is_filling(&id);
            let (cached, queued) = store(cache, move |c| {
                Ok((c.delete_cached_image(&id)?, c.delete_queued_image(&id)?))
            })
            .await?;
            if cached || queued || filling {
                empty(StatusCode::NO_CONTENT)
            } else {
                return Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    "the image is neither cached nor queued",
                ));
            }
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
        Op::Nodes(id) => match &cache.config().worker_self_reference_url {
            None => {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "worker_self_reference_url is not configured on this node",
                ))
            }
            Some(url) if cache.is_cached(&id) => json(StatusCode::OK, &[url]),
            Some(_) => json(StatusCode::OK, &Vec::<String>::new()),
        },
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
        Op::LegacyQueue(id) => {
            store(cache, move |c| c.queue_image(&id)).await?;
            prefetcher.wake();
            json(StatusCode::OK, &())
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

/// `PUT /v2/cache/{id}`: the image must exist (404) and be active (400), as the wrapped
/// service tells the cache's service identity.
async fn check_image<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: S,
    id: &ImageId,
) -> Result<Result<(), Refusal>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Default,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    let mut request = Request::new(ReqBody::default());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = shared
        .metadata
        .render(id)
        .parse()
        .expect("a rendered route is a valid URI");
    *request.headers_mut() = shared.identity.clone();
    let response = inner.oneshot(request).await?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no image with id {id}"),
        )));
    }
    if status != StatusCode::OK {
        let reason = format!("the image API answered {status} to the cache's service identity");
        return Ok(Err(Refusal::new(StatusCode::BAD_GATEWAY, &reason)));
    }
    let document = Limited::new(response.into_body(), 1024 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes());
    let image_status = document
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
    Ok(match image_status.as_deref() {
        Some("active") => Ok(()),
        Some(other) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the image is {other}, not active: there is no data to cache"),
        )),
        None => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "the image API's answer has no image status",
        )),
    })
}
