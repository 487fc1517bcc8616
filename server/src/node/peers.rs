//! Fills from the fleet's own nodes (`[cache_server] peer_token`): this node's fills are asked
//! of the nodes that hold the image, or of the node the fleet's table says is reading it now,
//! before the upstream; the peer route (`peer_route.rs`) serves the other side.
//!
//! A peer's bytes are held to the image's checksum from the upstream's metadata, as the
//! upstream's are, and only requests the cache layer marked as its fill ([`FillRequest`]: the
//! caller was admitted by the upstream) are answered from peers. A peer that fails is left
//! alone for a while; the fill's resume (`Range: bytes=N-`) then goes to the next holder or to
//! the upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tower_image_cache::layer::{FillRequest, FillSource};
use tower_image_cache::store::{FillClaim, FillScope, Fleet, PeerFailure};
use tower_image_cache::{ImageCache, ImageId};

use super::claims::Claims;
use super::peer_body::{Ledger, PeerBody};
use super::peer_identity::PeerIdentity;
use super::peer_route::resumed_from;
use crate::causes::error_chain;
use crate::sync::lock;

/// How long the fleet's database and a peer's response head may take before the next source
/// is asked.
const PEER_PATIENCE: Duration = Duration::from_secs(5);

/// How long the nodes' zones read from the fleet's table are used before they are read again.
const ZONES_KEPT: Duration = Duration::from_secs(10);

/// This node's fills, asked of the fleet's other nodes first.
#[derive(Clone)]
pub(crate) struct Peers {
    cache: ImageCache,
    identity: PeerIdentity,
    /// This node's zone (`[cache_server] peer_zone`), if any.
    zone: Option<Arc<str>>,
    http: reqwest::Client,
    /// The peers that failed lately, and those whose copies were read to their end.
    ledger: Ledger,
    /// The nodes' zones, and when they were read.
    zones: Arc<Mutex<Option<(Instant, Zones)>>>,
    /// The least bytes per second a holder's copy must come at (`peer_min_rate`).
    min_rate: Option<u64>,
}

/// The nodes' zones, by URL.
type Zones = Arc<HashMap<String, String>>;

/// Why a peer did not serve an image: what is counted, and a sentence for the log.
struct Failed(PeerFailure, String);

impl Peers {
    /// Fills answered by the nodes that hold the image, showing `identity`; a peer that sends
    /// nothing for `idle`, or whose committed copy comes slower than `min_rate` bytes per
    /// second, is given up. With a `zone`, the peers of that zone are asked first, and one node
    /// of the zone reads an image into it for the others.
    pub(crate) fn new(
        cache: &ImageCache,
        identity: PeerIdentity,
        zone: Option<&str>,
        idle: Option<Duration>,
        min_rate: Option<u64>,
    ) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .no_proxy();
        if let Some(idle) = idle {
            http = http.read_timeout(idle);
        }
        let http = http
            .build()
            .map_err(|err| format!("the client of the fleet's peers cannot be set up: {err}"))?;
        Ok(Peers {
            cache: cache.clone(),
            identity,
            zone: zone.map(Arc::from),
            http,
            ledger: Ledger::new(cache),
            zones: Arc::default(),
            min_rate,
        })
    }

    /// Where the fill `request` asks for (if it is one) is read from: a peer that holds the
    /// image, the peer the fleet's table says reads it now, or the upstream, with this node's
    /// claims on the image when it is the one to read it.
    pub(crate) fn answer(
        &self,
        request: &Request<Body>,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        // Read before the wait: a request (its body) is not `Sync`.
        let id = request
            .extensions()
            .get::<FillRequest>()
            .map(|fill| fill.image().clone());
        let range = request.headers().get(header::RANGE).cloned();
        let peers = self.clone();
        async move {
            match id {
                Some(id) => peers.answer_fill(id, range).await,
                None => Answer::Upstream(Claims::default()),
            }
        }
    }

    async fn answer_fill(&self, id: ImageId, range: Option<HeaderValue>) -> Answer {
        let upstream = || Answer::Upstream(Claims::default());
        let Some(fleet) = self.cache.fleet() else {
            return upstream();
        };
        let holders = match self.ledger.holders().get(&id) {
            Some(holders) => holders,
            None => match tokio::time::timeout(PEER_PATIENCE, fleet.nodes_caching(&id)).await {
                Ok(Ok(holders)) => {
                    self.ledger.holders().put(&id, &holders);
                    holders
                }
                Ok(Err(err)) => {
                    tracing::warn!(image = %id, %err, "the fleet's database did not say which nodes hold the image; filling from the upstream");
                    return upstream();
                }
                Err(_) => {
                    tracing::warn!(image = %id, "the fleet's database did not answer in time; filling from the upstream");
                    return upstream();
                }
            },
        };
        let delivered = self.ledger.take_delivered(&id);
        if let (Some(peer), None) = (delivered, &range) {
            // Its whole copy came here and yet the image is asked again: it did not verify.
            tracing::warn!(image = %id, %peer, "the copy a peer sent did not verify here (rotten on its disk?); asking other sources");
            self.cache.count_peer_failure(PeerFailure::Unverified);
            self.ledger.rest(&peer);
            let (http, identity, image) = (self.http.clone(), self.identity.clone(), id.clone());
            tokio::spawn(async move { super::rot::report(&http, &identity, &peer, &image).await });
        }
        let holders: Vec<String> = holders
            .into_iter()
            .filter(|peer| Some(peer.as_str()) != fleet.this_node() && !self.ledger.resting(peer))
            .collect();
        // The holders of this node's zone first; those of other zones are read across a
        // site's link by one node of the zone only.
        let zones = self.zones(&fleet).await;
        let (near, far): (Vec<&String>, Vec<&String>) = holders
            .iter()
            .partition(|peer| self.zone.is_none() || self.in_my_zone(&zones, peer));
        if let Some(response) = self.ask_holders(&near, &id, range.as_ref()).await {
            return Answer::Peer(response);
        }
        if range.is_some() {
            // A resume: the rest from another zone's holder, else from the upstream.
            return match self.ask_holders(&far, &id, range.as_ref()).await {
                Some(response) => Answer::Peer(response),
                None => upstream(),
            };
        }
        let mut claims = Claims::default();
        if let Some(zone) = &self.zone {
            let scope = FillScope::Zone(zone.to_string());
            match self.claim(&fleet, &id, &scope).await {
                Some(FillClaim::Ours) => claims.hold(&fleet, &id, scope),
                Some(FillClaim::Theirs(reader)) => {
                    return match self.follow(&reader, &id).await {
                        Some(response) => Answer::Peer(response),
                        None => upstream(),
                    }
                }
                _ => return upstream(),
            }
            // This node reads the image into its zone: from another zone's holder, else as
            // (or after) the fleet's one read of the upstream.
            if let Some(response) = self.ask_holders(&far, &id, None).await {
                return Answer::Peer(claims.ride(response));
            }
        }
        match self.claim(&fleet, &id, &FillScope::Fleet).await {
            Some(FillClaim::Ours) => {
                claims.hold(&fleet, &id, FillScope::Fleet);
                Answer::Upstream(claims)
            }
            Some(FillClaim::Theirs(reader)) => match self.follow(&reader, &id).await {
                Some(response) => Answer::Peer(claims.ride(response)),
                None => Answer::Upstream(claims),
            },
            _ => Answer::Upstream(claims),
        }
    }

    /// This node's claim of `id` in `scope`, or `None` when the fleet's database cannot say.
    async fn claim(&self, fleet: &Fleet, id: &ImageId, scope: &FillScope) -> Option<FillClaim> {
        match tokio::time::timeout(PEER_PATIENCE, fleet.claim_fill(id, scope)).await {
            Ok(Ok(claim)) => Some(claim),
            Ok(Err(err)) => {
                tracing::warn!(image = %id, %err, "the fill could not be claimed in the fleet's database; filling from the upstream");
                None
            }
            Err(_) => None,
        }
    }

    fn in_my_zone(&self, zones: &HashMap<String, String>, peer: &str) -> bool {
        zones.get(peer).map(String::as_str) == self.zone.as_deref()
    }

    /// The nodes' zones, read again after [`ZONES_KEPT`]; none when the table cannot be read.
    async fn zones(&self, fleet: &Fleet) -> Zones {
        if self.zone.is_none() {
            return Arc::default();
        }
        if let Some((read, zones)) = lock(&self.zones).as_ref() {
            if read.elapsed() < ZONES_KEPT {
                return zones.clone();
            }
        }
        match tokio::time::timeout(PEER_PATIENCE, fleet.zones()).await {
            Ok(Ok(zones)) => {
                let zones = Arc::new(zones);
                *lock(&self.zones) = Some((Instant::now(), zones.clone()));
                zones
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "the nodes' zones could not be read; asking any peer");
                Arc::default()
            }
            Err(_) => Arc::default(),
        }
    }

    /// The first of `peers` to serve `id` (from `range`).
    async fn ask_holders(
        &self,
        peers: &[&String],
        id: &ImageId,
        range: Option<&HeaderValue>,
    ) -> Option<Response<Body>> {
        for peer in peers {
            if let Some(response) = self.ask_holder(peer, id, range).await {
                return Some(response);
            }
        }
        None
    }

    /// `peer`'s copy of `id` (from `range`), or `None` after logging why not and resting it.
    async fn ask_holder(
        &self,
        peer: &str,
        id: &ImageId,
        range: Option<&HeaderValue>,
    ) -> Option<Response<Body>> {
        match self.ask(peer, id, range, FillSource::Peer).await {
            Ok(response) => {
                let from = range.and_then(resumed_from).unwrap_or(0);
                tracing::info!(image = %id, %peer, from, "filling from a peer");
                Some(response)
            }
            Err(Failed(failure, reason)) => {
                tracing::warn!(image = %id, %peer, %reason, "a peer could not serve the image; asking the next source");
                self.ledger.failed(peer, failure);
                None
            }
        }
    }

    /// The fill `reader` claimed, followed: it may not have begun yet (its upstream's answer
    /// not come), so a "not here" is asked again for a while.
    async fn follow(&self, reader: &str, id: &ImageId) -> Option<Response<Body>> {
        if self.ledger.resting(reader) {
            return None;
        }
        let deadline = Instant::now() + PEER_PATIENCE;
        loop {
            match self.ask(reader, id, None, FillSource::Follow).await {
                Ok(response) => {
                    tracing::info!(image = %id, peer = %reader, "following a peer's fill");
                    return Some(response);
                }
                Err(Failed(_, reason)) if reason.contains("404") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(Failed(failure, reason)) => {
                    tracing::warn!(image = %id, peer = %reader, %reason, "the peer reading the image could not be followed; filling from the upstream");
                    self.ledger.failed(reader, failure);
                    return None;
                }
            }
        }
    }

    /// `peer`'s answer for `id` when it is the image (or the range asked), else why not.
    async fn ask(
        &self,
        peer: &str,
        id: &ImageId,
        range: Option<&HeaderValue>,
        source: FillSource,
    ) -> Result<Response<Body>, Failed> {
        let url = format!("{}/peer/v1/images/{id}", peer.trim_end_matches('/'));
        let token = self
            .identity
            .token()
            .await
            .map_err(|reason| Failed(PeerFailure::Unreachable, reason))?;
        let mut asking = self.http.get(&url).header("x-auth-token", token);
        if let Some(range) = range {
            asking = asking.header(header::RANGE, range);
        }
        let answer = match tokio::time::timeout(PEER_PATIENCE, asking.send()).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(Failed(PeerFailure::Unreachable, error_chain(&err))),
            Err(_) => {
                let reason = format!("no answer within {} s", PEER_PATIENCE.as_secs());
                return Err(Failed(PeerFailure::Unreachable, reason));
            }
        };
        let expected = if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if answer.status() != expected {
            let reason = format!("it answered {}", answer.status());
            return Err(Failed(PeerFailure::Refused, reason));
        }
        // A resume's bytes must start where this node's stopped: any other start would put
        // wrong bytes at the fill's offset.
        let asked_from = range.and_then(resumed_from);
        let starts_at = answer
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.strip_prefix("bytes "))
            .and_then(|text| text.split('-').next())
            .and_then(|start| start.parse::<u64>().ok());
        if asked_from.is_some() && starts_at != asked_from {
            let reason = format!(
                "it answered a range from byte {starts_at:?} to a resume from byte {asked_from:?}"
            );
            return Err(Failed(PeerFailure::Refused, reason));
        }
        let mut response = Response::new(Body::empty());
        *response.status_mut() = answer.status();
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::CONTENT_TYPE,
        ] {
            if let Some(value) = answer.headers().get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        // A holder's copy goes at its disk's and the link's pace; a fill followed, at its
        // upstream's, which no floor judges.
        let floor = self.min_rate.filter(|_| source == FillSource::Peer);
        let body = PeerBody::new(answer, self.ledger.clone(), peer, id, floor);
        *response.body_mut() = Body::new(body);
        response.extensions_mut().insert(source);
        Ok(response)
    }
}

/// Where a request the node forwards is read from.
pub(crate) enum Answer {
    /// A peer's copy, or its fill followed.
    Peer(Response<Body>),
    /// The upstream; with this node's claims of the image when its fill is the fleet's (or
    /// its zone's) one read.
    Upstream(Claims),
}
