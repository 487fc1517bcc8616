//! How a request to the image API behind the cache failed, for a service in front of the cache
//! that talks to that API itself (a caching proxy) and counts its failures with the cache's;
//! and how a peer node failed to fill an image, for a service that fills from a fleet's nodes.

/// A failed request to the upstream image API, as counted in
/// `image_cache_upstream_errors_total{kind}` (and, for a timeout,
/// `image_cache_upstream_timeouts_total{phase}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamFailure {
    /// The connection could not be opened.
    Connect,
    /// The connection failed after it was open (reset, closed early).
    Connection,
    /// The upstream answered with a 5xx status.
    ServerError,
    /// The upstream took longer than allowed in this phase.
    Timeout(UpstreamPhase),
}

/// Where an upstream request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamPhase {
    /// Opening the connection (`upstream_connect_timeout`).
    Connect,
    /// Waiting for the response's head (`upstream_response_timeout`).
    Response,
    /// Waiting between two reads of the body (`upstream_idle_timeout`).
    Idle,
}

impl UpstreamPhase {
    /// The phase's name: the `phase` label, and the option's (`upstream_{phase}_timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamPhase::Connect => "connect",
            UpstreamPhase::Response => "response",
            UpstreamPhase::Idle => "idle",
        }
    }
}

/// Why a peer cache node could not fill an image, as counted in
/// `image_cache_peer_failures_total{reason}` (for a service behind the cache that fills from
/// other nodes of a fleet, as `image-cache-server` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerFailure {
    /// The peer could not be reached, or sent no answer in time.
    Unreachable,
    /// The peer answered with another status than the image (or the range asked).
    Refused,
    /// The peer's body ended early or stalled mid-image.
    Cut,
    /// The peer's whole copy did not match the image's checksum.
    Unverified,
    /// The peer's committed copy came slower than the node's floor (`peer_min_rate`).
    Slow,
}

impl PeerFailure {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerFailure::Unreachable => "unreachable",
            PeerFailure::Refused => "refused",
            PeerFailure::Cut => "cut",
            PeerFailure::Unverified => "unverified",
            PeerFailure::Slow => "slow",
        }
    }
}
