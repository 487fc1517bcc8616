//! What the image API says of an image, read in one place for the layer, the management routes,
//! the prefetcher and the tools: whether its metadata document makes it servable
//! ([`ImageState`]), and what a download of it must turn out to be ([`expected_download`]).

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName};

use crate::store::Expected;

const X_IMAGE_META_CHECKSUM: HeaderName = HeaderName::from_static("x-image-meta-checksum");
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// What the access check learned of the image, used to verify a fill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageMeta {
    /// Glance's `checksum`: the MD5 of the data as hex.
    pub checksum: Option<String>,
    /// Glance's `os_hash_algo` (e.g. `sha512`).
    pub os_hash_algo: Option<String>,
    /// Glance's `os_hash_value`: the data's hash with `os_hash_algo`, as hex.
    pub os_hash_value: Option<String>,
    /// The image's size in bytes.
    pub size: Option<u64>,
}

/// An image as its metadata document (`GET /v2/images/{id}`) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageState {
    /// `"status": "active"`: its data can be downloaded, and cached.
    Active(ImageMeta),
    /// Another status (`queued`, `saving`, `deactivated`, ...): there is no data to serve now.
    Inactive(String),
    /// Not an image document (no status).
    Unreadable,
}

impl ImageState {
    /// Reads an image document; fields of an unexpected type are read as absent.
    pub(crate) fn read(document: &[u8]) -> ImageState {
        // The usual document, read without building a tree of every field (a hit's hot path).
        if let Ok(doc) = serde_json::from_slice::<Document<'_>>(document) {
            return match doc.status.as_deref() {
                Some("active") => ImageState::Active(ImageMeta {
                    checksum: doc.checksum,
                    os_hash_algo: doc.os_hash_algo,
                    os_hash_value: doc.os_hash_value,
                    size: doc.size,
                }),
                Some(other) => ImageState::Inactive(other.to_owned()),
                None => ImageState::Unreadable,
            };
        }
        // An odd one (a field of an unexpected type): read what can be read.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(document) else {
            return ImageState::Unreadable;
        };
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        match text("status").as_deref() {
            Some("active") => ImageState::Active(ImageMeta {
                checksum: text("checksum"),
                os_hash_algo: text("os_hash_algo"),
                os_hash_value: text("os_hash_value"),
                size: value.get("size").and_then(|v| v.as_u64()),
            }),
            Some(other) => ImageState::Inactive(other.to_owned()),
            None => ImageState::Unreadable,
        }
    }
}

/// The fields of an image document the cache reads; the others are skipped unparsed.
#[derive(serde::Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    checksum: Option<String>,
    os_hash_algo: Option<String>,
    os_hash_value: Option<String>,
    size: Option<u64>,
}

/// The largest image document the cache reads.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Reads an image document's body, up to 1 MiB (a larger one is an error).
pub(crate) async fn read_document<B>(body: B) -> Result<bytes::Bytes, crate::body::BoxError>
where
    B: http_body::Body,
    B::Error: Into<crate::body::BoxError>,
{
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, MAX_DOCUMENT_BYTES)
        .collect()
        .await?;
    Ok(collected.to_bytes())
}

/// A message's `Content-Length`, when it has a readable one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a download must turn out to be, from the response and (when the caller has it) the
/// image's metadata:
/// - its size: the metadata's `size`, else `length` (the message's own);
/// - its MD5: the metadata's `checksum`, else `Content-MD5` (hex as Glance sends it, or RFC
///   1864's base64), else `x-image-meta-checksum` (Glance v1). The API's metadata wins over the
///   response's own headers: whoever can answer the download (a peer, a proxy on the path) must
///   not also choose the checksum its bytes are held to;
/// - its multihash: the metadata's `os_hash_algo` and `os_hash_value`, which alone then
///   verifies the bytes (the MD5 stays the record's checksum).
pub fn expected_download(
    length: Option<u64>,
    headers: &HeaderMap,
    meta: Option<&ImageMeta>,
) -> Expected {
    let mut expected = Expected::default();
    if let Some(size) = meta.and_then(|m| m.size).or(length) {
        expected = expected.size(size);
    }
    let header_md5 = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(md5_hex)
    };
    let md5 = meta
        .and_then(|m| m.checksum.as_deref())
        .and_then(md5_hex)
        .or_else(|| header_md5(&CONTENT_MD5))
        .or_else(|| header_md5(&X_IMAGE_META_CHECKSUM));
    if let Some(md5) = md5 {
        expected = expected.md5_hex(md5);
    }
    let os_hash = meta.and_then(|m| m.os_hash_algo.as_deref().zip(m.os_hash_value.as_deref()));
    if let Some((algorithm, value)) = os_hash.filter(|(a, v)| !a.is_empty() && !v.is_empty()) {
        expected = expected.os_hash(algorithm, value);
    }
    expected
}

/// An MD5 as hex, from hex (Glance's form) or base64 (RFC 1864's). Anything else is kept as
/// given, so the fill fails verification rather than caching unverified bytes.
fn md5_hex(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(value.to_ascii_lowercase());
    }
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(raw) if raw.len() == 16 => Some(hex::encode(raw)),
        _ => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

    #[test]
    fn md5_is_read_as_hex_or_base64() {
        assert_eq!(
            md5_hex("5D41402ABC4B2A76B9719D911017C592").as_deref(),
            Some(HELLO_MD5)
        );
        assert_eq!(
            md5_hex("XUFAKrxLKna5cZ2REBfFkg==").as_deref(),
            Some(HELLO_MD5)
        );
        assert_eq!(md5_hex("").as_deref(), None);
        assert_eq!(md5_hex("garbage").as_deref(), Some("garbage"));
    }

    #[test]
    fn the_metadata_wins_over_the_response_headers() {
        // A response naming its own checksum (Content-MD5 of poisoned bytes) and length is
        // held to the API's metadata, not to what it says of itself.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(5u64));
        headers.insert(CONTENT_MD5, HeaderValue::from_static(HELLO_MD5));
        headers.insert(X_IMAGE_META_CHECKSUM, HeaderValue::from_static(HELLO_MD5));
        let meta = ImageMeta {
            checksum: Some("00000000000000000000000000000000".into()),
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some("ab".into()),
            size: Some(9),
        };
        let expected = expected_download(Some(5), &headers, Some(&meta));
        assert_eq!(
            expected,
            Expected::default()
                .size(9)
                .md5_hex("00000000000000000000000000000000")
                .sha512_hex("ab")
        );
        // Metadata without a checksum or size: the response's own are all there is.
        let bare = ImageMeta::default();
        assert_eq!(
            expected_download(Some(5), &headers, Some(&bare)),
            Expected::default().size(5).md5_hex(HELLO_MD5)
        );
    }

    #[test]
    fn without_metadata_both_md5_headers_are_read() {
        let mut base64 = HeaderMap::new();
        base64.insert(
            CONTENT_MD5,
            HeaderValue::from_static("XUFAKrxLKna5cZ2REBfFkg=="),
        );
        assert_eq!(
            expected_download(Some(5), &base64, None),
            Expected::default().size(5).md5_hex(HELLO_MD5)
        );
        let mut v1 = HeaderMap::new();
        v1.insert(X_IMAGE_META_CHECKSUM, HeaderValue::from_static(HELLO_MD5));
        assert_eq!(
            expected_download(None, &v1, None),
            Expected::default().md5_hex(HELLO_MD5)
        );
        assert_eq!(
            expected_download(None, &HeaderMap::new(), None),
            Expected::default()
        );
    }

    #[test]
    fn only_active_images_are_servable() {
        let ImageState::Active(meta) = ImageState::read(
            br#"{"status":"active","checksum":"ab","size":3,"os_hash_algo":"sha512","os_hash_value":"cd"}"#,
        ) else {
            panic!("an active image");
        };
        assert_eq!(meta.checksum.as_deref(), Some("ab"));
        assert_eq!(meta.size, Some(3));
        assert_eq!(meta.os_hash_value.as_deref(), Some("cd"));
        assert_eq!(
            ImageState::read(br#"{"status":"deactivated"}"#),
            ImageState::Inactive("deactivated".into())
        );
        // A field of an unexpected type is read as absent, not as a refusal.
        let ImageState::Active(odd) =
            ImageState::read(br#"{"status":"active","size":"12","checksum":null,"tags":[1]}"#)
        else {
            panic!("an odd but active image");
        };
        assert_eq!((odd.size, odd.checksum), (None, None));
        assert_eq!(
            ImageState::read(br#"{"status":"queued","size":"x"}"#),
            ImageState::Inactive("queued".into())
        );
        assert_eq!(ImageState::read(br#"{"id":"x"}"#), ImageState::Unreadable);
        assert_eq!(ImageState::read(b"not json"), ImageState::Unreadable);
    }
}
