//! How a request to the image API behind the cache failed, for a service in front of the cache
//! that talks to that API itself (a caching proxy) and counts its failures with the cache's.

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
