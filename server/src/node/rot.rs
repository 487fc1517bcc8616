//! Copies that rotted on a node's disk: a node whose fill from a peer did not verify reports
//! it to that peer (`POST /peer/v1/images/{id}/unverified`), and the peer checks its own copy
//! against the checksum it recorded, removing it when they differ, so a rotten copy leaves the
//! fleet instead of failing the next node's download too.
//!
//! Copies with block sums never get this far: the peer route checks each block before sending
//! it (`CheckedReader`), and stops at a rotten one. This is for the copies without them (a file
//! system without user attributes, a file replaced by hand, a very large image).

use std::io::Read;

use axum::body::Body;
use http::{Response, StatusCode};
use md5::{Digest, Md5};
use tower_image_cache::{ImageCache, ImageId};

use super::peer_identity::PeerIdentity;

/// The report route, beside the peer route.
pub(crate) const REPORT_ROUTE: &str = "/peer/v1/images/{id}/unverified";

/// Tells `peer` that its copy of `id` did not verify here; its answer is logged.
pub(crate) async fn report(
    http: &reqwest::Client,
    identity: &PeerIdentity,
    peer: &str,
    id: &ImageId,
) {
    let url = format!(
        "{}/peer/v1/images/{id}/unverified",
        peer.trim_end_matches('/')
    );
    let sent = match identity.token().await {
        Ok(token) => http.post(&url).header("x-auth-token", token).send().await,
        Err(reason) => {
            tracing::warn!(image = %id, %peer, %reason, "a rotten copy could not be reported");
            return;
        }
    };
    match sent {
        Ok(answer) => {
            let status = answer.status();
            let said = answer.text().await.unwrap_or_default();
            tracing::info!(image = %id, %peer, %status, answer = %said.trim(), "reported a copy that did not verify to the peer holding it");
        }
        Err(err) => {
            tracing::warn!(image = %id, %peer, err = %crate::causes::error_chain(&err), "a rotten copy could not be reported");
        }
    }
}

/// What a peer's report of this node's copy of `id` comes to: the copy checked against the
/// MD5 recorded when it was cached, and removed when they differ.
pub(crate) async fn check_reported(cache: &ImageCache, id: &ImageId) -> Response<Body> {
    let Some(record) = cache.cached_image(id) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("This node does not hold image {id}."),
        );
    };
    let Some(expected) = record.checksum.clone() else {
        return answer(
            StatusCode::OK,
            format!("This node recorded no checksum for image {id}; its copy is kept."),
        );
    };
    let path = cache.config().image_cache_dir.join(id.as_str());
    let digest = tokio::task::spawn_blocking(move || md5_of(&path)).await;
    let actual = match digest {
        Ok(Ok(actual)) => actual,
        Ok(Err(err)) => {
            tracing::warn!(image = %id, %err, "a reported copy could not be read");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("This node cannot read its copy of image {id} now."),
            );
        }
        Err(_) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("This node cannot check its copy of image {id} now."),
            )
        }
    };
    if actual.eq_ignore_ascii_case(&expected) {
        tracing::info!(image = %id, "a peer reported this node's copy, which matches its checksum: kept");
        return answer(
            StatusCode::OK,
            format!("This node's copy of image {id} matches its checksum; it is kept."),
        );
    }
    tracing::error!(image = %id, %expected, %actual, "this node's copy no longer matches its checksum (rotten on disk); removing it");
    match cache.delete_cached_image(id) {
        Ok(_) => answer(
            StatusCode::OK,
            format!("This node's copy of image {id} did not match its checksum; it is removed."),
        ),
        Err(err) => {
            tracing::warn!(image = %id, %err, "a rotten copy could not be removed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("This node's copy of image {id} is rotten but could not be removed."),
            )
        }
    }
}

fn md5_of(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(md5
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn answer(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(message + "\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
