//! What a node's management API answers, as the tools read it (the listing's records and
//! fills), and why a call failed ([`ClientError`]).

use std::fmt;

use reqwest::StatusCode;
use serde::Deserialize;

/// Why a management call failed, worded as Glance's tools word it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// 403: the token may not manage the cache.
    Forbidden,
    /// 401 or 403, and no token was sent at all.
    NoToken,
    /// 401: the token was not accepted (unknown or expired).
    Unauthorized,
    /// 404 without a management answer: the node has no management layer.
    NotEnabled {
        /// The node.
        node: String,
    },
    /// A management answer other than success (e.g. 404 for an image neither cached nor queued).
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The node's reason.
        message: String,
    },
    /// No token could be had from Keystone.
    Identity(String),
    /// The node could not be reached or answered nonsense.
    Unreachable {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Forbidden => f.write_str("Not authorized to make this request."),
            ClientError::NoToken => f.write_str(
                "Not authorized to make this request: no token was given (source an openrc, \
                 pass --os-cloud, or pass --os-auth-token).",
            ),
            ClientError::Unauthorized => f.write_str(
                "The token was not accepted (401): it is unknown or has expired; get a new one.",
            ),
            ClientError::NotEnabled { node } => {
                write!(f, "Cache management middleware not enabled on host {node}")
            }
            ClientError::Refused { status, message } => write!(f, "{message} ({status})"),
            ClientError::Identity(reason) => f.write_str(reason),
            ClientError::Unreachable { node, reason } => {
                write!(f, "host {node} is unreachable: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// `GET /v2/cache`.
#[derive(Debug, Clone, Deserialize)]
pub struct Listing {
    /// The cached images' records.
    pub cached_images: Vec<Record>,
    /// The queue, in fetch order.
    pub queued_images: Vec<String>,
    /// The fills running now (this cache's addition to Glance's answer; empty from Glance).
    #[serde(default)]
    pub in_progress: Vec<InProgress>,
}

/// A fill running on the node.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct InProgress {
    /// The image being filled.
    pub image_id: String,
    /// Bytes written so far.
    pub bytes_written: u64,
    /// The image's size, when known.
    pub expected_size: Option<u64>,
}

/// A cached image's record.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Record {
    /// The record's number in the index (Glance's `id`).
    #[serde(default)]
    pub id: Option<i64>,
    /// The image's id.
    pub image_id: String,
    /// The image's checksum, where the node knows it.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Complete hits.
    pub hits: u64,
    /// Epoch seconds.
    pub last_accessed: f64,
    /// Epoch seconds.
    pub last_modified: f64,
    /// Bytes.
    pub size: u64,
}
