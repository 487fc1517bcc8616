//! [`ImageId`]: an image id that is safe to use as a file name.

use std::fmt;

/// The longest id accepted, in bytes (the usual file-name limit).
pub(crate) const MAX_ID_LEN: usize = 255;

/// An image id that has been checked to be safe as a single file name.
///
/// Only `[A-Za-z0-9._~-]` are allowed, at most 255 bytes, and never `.` or `..`. Anything else
/// (a `/` or `\`, a NUL, a percent-escape, unicode) is refused, so an `ImageId` can be joined
/// onto `image_cache_dir` without ever naming a path outside it.
///
/// ```
/// use tower_image_cache::ImageId;
///
/// let id = ImageId::new("8a0b0f1c-5d1e-4c4e-9a43-2b1d5f0a9c11").unwrap();
/// assert_eq!(id.as_str(), "8a0b0f1c-5d1e-4c4e-9a43-2b1d5f0a9c11");
/// assert!(ImageId::new("..").is_err());
/// assert!(ImageId::new("a%2fb").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(Box<str>);

impl ImageId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, InvalidImageId> {
        let reason = if id.is_empty() {
            Some("is empty")
        } else if id.len() > MAX_ID_LEN {
            Some("is longer than 255 bytes")
        } else if id == "." || id == ".." {
            Some("is a relative path component")
        } else if !id.bytes().all(is_id_byte) {
            Some("has characters outside [A-Za-z0-9._~-]")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidImageId { reason }),
            None => Ok(ImageId(id.into())),
        }
    }

    /// The id as text (also its file name in the cache).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

impl serde::Serialize for ImageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ImageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ImageId {
    type Err = InvalidImageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageId::new(s)
    }
}

/// The error returned when a string is not a safe image id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidImageId {
    reason: &'static str,
}

impl fmt::Display for InvalidImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the image id {}", self.reason)
    }
}

impl std::error::Error for InvalidImageId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_glance_style_ids() {
        for id in [
            "8a0b0f1c-5d1e-4c4e-9a43-2b1d5f0a9c11",
            "cirros",
            "a.b_c~d-e",
            "...",
        ] {
            assert!(ImageId::new(id).is_ok(), "{id}");
        }
        assert!(ImageId::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn refuses_anything_unsafe_as_a_file_name() {
        let long = "a".repeat(256);
        for id in [
            "", ".", "..", "a/b", "a\\b", "a\0b", "%2e%2e", "a%2fb", "é", "a b", &long,
        ] {
            assert!(ImageId::new(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn error_reads_as_a_sentence() {
        let err = ImageId::new("..").unwrap_err();
        assert_eq!(err.to_string(), "the image id is a relative path component");
    }
}
