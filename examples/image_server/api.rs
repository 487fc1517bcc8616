//! The image API's routes: a small Glance v2 (images with metadata, upload, download, delete,
//! deactivate) and its error answers; the image data's routes are in `data.rs`.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::data::{download, upload};
use crate::images::{now_iso, AppState, Image, Shared};

/// An error answer, as Glance shapes them.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(status, message) = self;
        let body = serde_json::json!({ "error": { "code": status.as_u16(), "title": status.canonical_reason(), "message": message } });
        (status, Json(body)).into_response()
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError(status, message.to_owned())
}

pub(crate) type ApiResult = Result<Response, ApiError>;

async fn versions() -> Json<serde_json::Value> {
    let versions: Vec<serde_json::Value> = (0..=18)
        .rev()
        .map(|minor| {
            let status = match minor {
                18 => "CURRENT",
                _ => "SUPPORTED",
            };
            serde_json::json!({
                "id": format!("v2.{minor}"),
                "status": status,
                "links": [{"rel": "self", "href": "/v2/"}],
            })
        })
        .collect();
    Json(serde_json::json!({ "versions": versions }))
}

/// The image schema python-glanceclient downloads before it uses the v2 API.
async fn image_schema() -> Json<serde_json::Value> {
    let text = |description: &str| serde_json::json!({ "type": ["null", "string"], "description": description });
    Json(serde_json::json!({
        "name": "image",
        "additionalProperties": { "type": "string" },
        "properties": {
            "id": { "type": "string", "description": "An identifier for the image" },
            "name": text("Descriptive name for the image"),
            "status": { "type": "string", "readOnly": true, "description": "Status of the image",
                        "enum": ["queued", "saving", "active", "killed", "deleted", "deactivated", "uploading", "importing", "pending_delete"] },
            "visibility": { "type": "string", "enum": ["community", "public", "private", "shared"], "description": "Scope of image accessibility" },
            "owner": text("Owner of the image"),
            "disk_format": text("Format of the disk"),
            "container_format": text("Format of the container"),
            "size": { "type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes" },
            "checksum": { "type": ["null", "string"], "readOnly": true, "description": "md5 hash of image contents" },
            "os_hash_algo": { "type": ["null", "string"], "readOnly": true, "description": "Algorithm to calculate the os_hash_value" },
            "os_hash_value": { "type": ["null", "string"], "readOnly": true, "description": "Hexdigest of the image contents" },
            "protected": { "type": "boolean", "description": "If true, image will not be deletable" },
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 255 }, "description": "List of strings related to the image" },
            "created_at": { "type": "string", "readOnly": true, "description": "Date and time of image registration" },
            "updated_at": { "type": "string", "readOnly": true, "description": "Date and time of the last image modification" },
            "self": { "type": "string", "readOnly": true, "description": "An image self url" },
            "file": { "type": "string", "readOnly": true, "description": "An image file url" },
            "schema": { "type": "string", "readOnly": true, "description": "An image schema url" }
        },
        "links": [
            { "rel": "self", "href": "{self}" },
            { "rel": "enclosure", "href": "{file}" },
            { "rel": "describedby", "href": "{schema}" }
        ]
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewImage {
    name: Option<String>,
    disk_format: Option<String>,
    container_format: Option<String>,
    visibility: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    protected: bool,
}

async fn create_image(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let caller = state.caller(&headers)?.clone();
    let document: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let new: NewImage = serde_json::from_slice(document).map_err(|err| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid image document: {err}"),
        )
    })?;
    let visibility = new.visibility.unwrap_or_else(|| "shared".into());
    if !matches!(
        visibility.as_str(),
        "public" | "private" | "shared" | "community"
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "visibility must be public, private, shared or community",
        ));
    }
    if visibility == "public" && !caller.is_admin() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only admins may create public images",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_iso();
    let image = Image {
        file: format!("/v2/images/{id}/file"),
        self_link: format!("/v2/images/{id}"),
        schema: "/v2/schemas/image".into(),
        id,
        name: new.name,
        status: "queued".into(),
        visibility,
        owner: caller.project.clone(),
        disk_format: new.disk_format,
        container_format: new.container_format,
        size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        protected: new.protected,
        tags: new.tags,
        created_at: now.clone(),
        updated_at: now,
    };
    let image = state.save(image).map_err(internal)?;
    Ok((StatusCode::CREATED, Json(&*image)).into_response())
}

pub(crate) fn internal(err: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
}

async fn list_images(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let caller = state.caller(&headers)?;
    let listed = state.listed(caller);
    let visible: Vec<&Image> = listed.iter().map(|image| &**image).collect();
    let listing = serde_json::json!({ "images": visible, "schema": "/v2/schemas/images", "first": "/v2/images" });
    Ok(Json(listing).into_response())
}

async fn show_image(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    Ok(Json(&*state.visible(caller, &id)?).into_response())
}

async fn delete_image(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let caller = state.caller(&headers)?;
    let image = state.visible(caller, &id)?;
    if !caller.is_admin() && image.owner != caller.project {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only the owner or an admin may delete an image",
        ));
    }
    if image.protected {
        return Err(error(StatusCode::FORBIDDEN, "the image is protected"));
    }
    state.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn set_status(state: &AppState, headers: &HeaderMap, id: &str, from: &str, to: &str) -> ApiResult {
    let caller = state.caller(headers)?;
    if !caller.is_admin() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only admins may change an image's activation",
        ));
    }
    let mut image = state.visible(caller, id)?.as_ref().clone();
    if image.status != to {
        if image.status != from {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("an image in status {} cannot become {to}", image.status),
            ));
        }
        image.status = to.into();
        image.updated_at = now_iso();
        state.save(image).map_err(internal)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deactivate(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    set_status(&state, &headers, &id, "active", "deactivated")
}

async fn reactivate(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    set_status(&state, &headers, &id, "deactivated", "active")
}

/// The image API's routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/versions", get(versions))
        .route("/v2/schemas/image", get(image_schema))
        .route("/v2/images", post(create_image).get(list_images))
        .route("/v2/images/{id}", get(show_image).delete(delete_image))
        .route("/v2/images/{id}/file", get(download).put(upload))
        .route("/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/v2/images/{id}/actions/reactivate", post(reactivate))
        .with_state(state)
}
