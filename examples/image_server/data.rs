//! The image data's routes: an upload hashed as it is written, and downloads (whole, or one
//! range as Glance answers it) from the image store.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use md5::Digest;
use tokio::io::AsyncWriteExt;

use crate::api::{error, internal, ApiResult};
use crate::images::{now_iso, HashingAlgorithm, Shared};
use crate::store::read_throttled;

pub(crate) async fn upload(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let mut image = state.visible(caller, &id)?.as_ref().clone();
    if !caller.is_admin() && image.owner != caller.project {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only the owner or an admin may upload data",
        ));
    }
    if image.status != "queued" {
        let message = format!(
            "image data can only be uploaded to a queued image, not {}",
            image.status
        );
        return Err(error(StatusCode::CONFLICT, &message));
    }
    let partial = state.upload_path(&id);
    let (size, md5, os_hash) = match write_upload(&partial, body, state.hashing).await {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("the upload failed: {err}"),
            ));
        }
    };
    state.store_upload(&id).map_err(internal)?;
    image.status = "active".into();
    image.size = Some(size);
    image.checksum = Some(md5);
    image.os_hash_algo = state.hashing.name().map(str::to_owned);
    image.os_hash_value = os_hash;
    image.updated_at = now_iso();
    state.save(image).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Writes the upload to `path`; its size, MD5 and multihash (with `hashing`), as hex.
async fn write_upload(
    path: &Path,
    body: Body,
    hashing: HashingAlgorithm,
) -> Result<(u64, String, Option<String>), Box<dyn std::error::Error + Send + Sync>> {
    let mut file = tokio::fs::File::create(path).await?;
    let (mut md5, mut multihash, mut size) = (md5::Md5::new(), hashing.hasher(), 0u64);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        md5.update(&chunk);
        if let Some(multihash) = multihash.as_mut() {
            multihash.update(&chunk);
        }
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((
        size,
        hex::encode(md5.finalize()),
        multihash.map(|multihash| hex::encode(multihash.finalize())),
    ))
}

/// Reads of at most this many bytes are done in place, not on a blocking thread.
const READ_IN_PLACE: u64 = 64 * 1024;

pub(crate) async fn download(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let image = state.visible(caller, &id)?;
    if image.status == "deactivated" && !caller.is_admin() {
        return Err(error(StatusCode::FORBIDDEN, "the image is deactivated"));
    }
    if !caller.may_download() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "You are not authorized to complete download_image action.",
        ));
    }
    let Some(size) = image.size.filter(|_| image.status != "queued") else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // One range (`bytes=A-B`, `bytes=A-`, `bytes=-N`), as Glance answers it; the store reads
    // only those bytes.
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok())
        .and_then(|r| r.validate(size).ok())
        .and_then(|ranges| (ranges.len() == 1).then(|| ranges[0].clone()));
    let (start, len) = match &range {
        Some(range) => (*range.start(), range.end() - range.start() + 1),
        None => (0, size),
    };
    let unreadable = |err: std::io::Error| internal(format!("the image data is unreadable: {err}"));
    let mut response = if len <= READ_IN_PLACE && state.throttle.is_none() {
        // A few pages (the cache's one-byte access probe, a small image): read here, as a
        // page-cache copy costs less than two hand-offs to a blocking thread.
        tracing::debug!(image = %id, size, start, len, "reading image data from the image store");
        let file = state.data_file(&id).map_err(unreadable)?;
        let mut bytes = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, start).map_err(unreadable)?;
        Response::new(Body::from(bytes))
    } else {
        tracing::info!(image = %id, size, start, len, "reading image data from the image store");
        // A file of its own: the stream reads from its position.
        let mut file = tokio::fs::File::open(state.data_path(&id))
            .await
            .map_err(unreadable)?
            .into_std()
            .await;
        if start > 0 {
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(unreadable)?;
        }
        Response::new(Body::from_stream(read_throttled(
            file,
            len,
            state.throttle.clone(),
        )))
    };
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {start}-{}/{size}", start + len - 1);
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, content_range.parse().unwrap());
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    headers.insert(header::CONTENT_LENGTH, len.into());
    if let Some(checksum) = image
        .checksum
        .as_deref()
        .filter(|_| range.is_none())
        .and_then(|c| c.parse().ok())
    {
        headers.insert("content-md5", checksum);
    }
    Ok(response)
}
