//! Answering from the cache: the whole image, a range of it, or "not modified".
//!
//! - `If-None-Match` matching the checksum `ETag` (or `*`) → `304`.
//! - One `Range` (`a-b`, `a-`, `-n`) → `206` with `Content-Range`; unsatisfiable → `416` with
//!   `Content-Range: bytes */size`. A malformed `Range`, several ranges, or an `If-Range` that does
//!   not match the `ETag` (or is a date: hits carry no `Last-Modified`) → the whole image, `200`,
//!   as RFC 9110 allows.
//! - `HEAD` gets exactly the headers `GET` would.

use std::ops::RangeInclusive;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_range_header::RangeUnsatisfiableError;

use super::settings::{CacheStatus, Settings};
use crate::body::CacheBody;
use crate::store::CachedEntry;
use crate::ImageId;

/// Conditional headers the cache cannot evaluate (it has no `Last-Modified` to compare);
/// requests carrying them go to the wrapped service.
const UNEVALUATED: [HeaderName; 3] = [
    header::IF_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Whether the cache can answer a request with these headers itself.
pub(crate) fn can_answer(headers: &HeaderMap) -> bool {
    !UNEVALUATED.iter().any(|name| headers.contains_key(name))
}

/// Whether the request asks for part of the image, or only if it changed.
pub(crate) fn is_partial_or_conditional(headers: &HeaderMap) -> bool {
    [header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH]
        .iter()
        .any(|name| headers.contains_key(name))
}

/// What to send for a cached image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    NotModified,
    Whole,
    Part(RangeInclusive<u64>),
    Unsatisfiable,
}

/// What a hit's headers say of the copy: its size, and its checksum as `ETag` and
/// `Content-MD5`, made once per hit (the record itself is not copied).
pub(crate) struct Described {
    size: u64,
    etag: Option<HeaderValue>,
    md5: Option<HeaderValue>,
}

impl Described {
    /// The headers of an index entry (of the copy a GET opened, or the one a HEAD looked up):
    /// no record is built.
    pub(crate) fn of_entry(entry: &CachedEntry) -> Self {
        let mut hex = [0u8; 32];
        let md5 = entry
            .md5()
            .and_then(|md5| hex::encode_to_slice(md5, &mut hex).ok())
            .and_then(|()| std::str::from_utf8(&hex).ok());
        Self::of(entry.size(), md5)
    }

    /// The headers of a copy of `size` bytes whose MD5 is `md5` (hex).
    pub(crate) fn of(size: u64, md5: Option<&str>) -> Self {
        let md5 = md5.and_then(|md5| HeaderValue::from_str(md5).ok());
        let etag = md5.as_ref().and_then(|md5| {
            let mut tag = Vec::with_capacity(md5.len() + 2);
            tag.push(b'"');
            tag.extend_from_slice(md5.as_bytes());
            tag.push(b'"');
            HeaderValue::from_maybe_shared(bytes::Bytes::from(tag)).ok()
        });
        Described { size, etag, md5 }
    }
}

pub(crate) fn decide(headers: &HeaderMap, described: &Described) -> Answer {
    let etag = described.etag.as_ref().and_then(|e| e.to_str().ok());
    if let Some(if_none_match) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if etag.is_some_and(|etag| matches_any(if_none_match, etag)) {
            return Answer::NotModified;
        }
    }
    // A repeated `Range` is as malformed as a garbled one: ignored.
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Answer::Whole;
    };
    let Ok(range) = range.to_str() else {
        return Answer::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        let strong_match = etag.is_some_and(|etag| if_range.as_bytes() == etag.as_bytes());
        if !strong_match {
            return Answer::Whole;
        }
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Answer::Whole; // malformed: ignored, as RFC 9110 allows
    };
    match parsed.validate(described.size) {
        Ok(ranges) if ranges.len() == 1 => Answer::Part(ranges[0].clone()),
        Ok(_) => Answer::Whole,
        Err(RangeUnsatisfiableError::Unsatisfiable) => Answer::Unsatisfiable,
        Err(_) => Answer::Whole,
    }
}

/// `If-None-Match: "a", W/"b"` against a strong tag, by the weak comparison RFC 9110 asks for.
fn matches_any(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// The response for a cached image, or `None` when it is no longer there.
pub(crate) async fn serve<A, B>(
    settings: &Settings<A>,
    id: &ImageId,
    entry: CachedEntry,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<CacheBody<B>>> {
    let cache = &settings.cache;
    // A GET decides from the record of the copy it opened, so the headers always describe the
    // bytes sent, even if the image was evicted and cached again a moment ago. A HEAD reads no
    // file and answers from the entry looked up.
    let (described, reader) = if *method == Method::GET {
        let opened = if entry.opens_in_place() {
            // A small image: open and read it in place, as a page-cache copy costs less than two
            // thread hand-offs (which were most of a small hit's time).
            cache.open_entry(id, entry).map_err(|err| err.to_string())
        } else {
            let opening = id.clone();
            let opened = cache.blocking(move |c| c.open_entry(&opening, entry)).await;
            opened.map_err(|err| err.to_string())
        };
        let reader = match opened {
            Ok(Some(reader)) => reader,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(image = %id, %err, "could not open a cached image; fetching it instead");
                return None;
            }
        };
        (Described::of_entry(reader.entry()), Some(reader))
    } else {
        (Described::of_entry(&entry), None)
    };
    let answer = decide(headers, &described);
    let body = match (reader, &answer) {
        (Some(reader), Answer::Part(range)) => CacheBody::hit(reader.limit_to(range.clone())),
        (Some(reader), Answer::Whole) => CacheBody::hit(reader),
        _ => CacheBody::empty(),
    };
    Some(settings.mark(response(described, &answer, body), CacheStatus::Hit))
}

/// The most headers a hit's answer carries (with `Cache-Control` and `X-Cache-Status`, added
/// after): the map is sized once.
const HIT_HEADERS: usize = 8;

fn response<B>(
    Described { size, etag, md5 }: Described,
    answer: &Answer,
    body: CacheBody<B>,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(body);
    *response.headers_mut() = HeaderMap::with_capacity(HIT_HEADERS);
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    let (status, length) = match answer {
        Answer::NotModified => (StatusCode::NOT_MODIFIED, None),
        Answer::Unsatisfiable => {
            let range =
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits are valid");
            headers.insert(header::CONTENT_RANGE, range);
            (StatusCode::RANGE_NOT_SATISFIABLE, Some(0))
        }
        Answer::Part(range) => {
            let content_range = format!("bytes {}-{}/{size}", range.start(), range.end());
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("digits are valid"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                Some(range.end() - range.start() + 1),
            )
        }
        Answer::Whole => {
            // Glance sends the hex MD5 in Content-MD5; clients compare it with the image checksum.
            if let Some(md5) = md5 {
                headers.insert(HeaderName::from_static("content-md5"), md5);
            }
            (StatusCode::OK, Some(size))
        }
    };
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if length > 0 {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
    }
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CachedImage;

    fn record() -> CachedImage {
        CachedImage {
            id: 1,
            image_id: "img".into(),
            hits: 0,
            last_accessed: 0.0,
            last_modified: 0.0,
            size: 1000,
            checksum: Some("abc".into()),
        }
    }

    fn decide_with(pairs: &[(HeaderName, &str)]) -> Answer {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        let record = record();
        decide(
            &headers,
            &Described::of(record.size, record.checksum.as_deref()),
        )
    }

    #[test]
    fn single_ranges_of_every_form() {
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=0-99")]),
            Answer::Part(0..=99)
        );
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=900-")]),
            Answer::Part(900..=999)
        );
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=-10")]),
            Answer::Part(990..=999)
        );
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=990-5000")]),
            Answer::Part(990..=999)
        );
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=1000-")]),
            Answer::Unsatisfiable
        );
    }

    #[test]
    fn a_repeated_range_is_ignored() {
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=0-0"), (header::RANGE, "bytes=1-1")]),
            Answer::Whole
        );
    }

    #[test]
    fn what_falls_back_to_the_whole_image() {
        for range in ["bytes=5-2", "bytes=abc", "items=0-1", "bytes=0-1,5-6"] {
            assert_eq!(
                decide_with(&[(header::RANGE, range)]),
                Answer::Whole,
                "{range}"
            );
        }
        assert_eq!(
            decide_with(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "\"other\"")
            ]),
            Answer::Whole
        );
        assert_eq!(
            decide_with(&[
                (header::RANGE, "bytes=0-1"),
                (header::IF_RANGE, "Wed, 21 Oct 2015 07:28:00 GMT")
            ]),
            Answer::Whole
        );
        assert_eq!(
            decide_with(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"abc\"")]),
            Answer::Part(0..=1)
        );
    }

    #[test]
    fn if_none_match_compares_weakly() {
        for list in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert_eq!(
                decide_with(&[(header::IF_NONE_MATCH, list)]),
                Answer::NotModified,
                "{list}"
            );
        }
        assert_eq!(
            decide_with(&[(header::IF_NONE_MATCH, "\"abd\"")]),
            Answer::Whole
        );
    }
}
