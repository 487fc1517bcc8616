//! Who called, as the upstream is told: `X-Forwarded-For`, `-Proto` and `-Host` set at the
//! node's edge from the connection itself, and taken from the caller only when its address is
//! one of `[cache_server] trusted_proxies` (a load balancer in front).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The addresses whose forwarding headers are believed: single addresses or CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Reads a comma-separated list (`10.0.0.5, 10.1.0.0/16, ::1`); an error names the entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry, None),
            };
            let bad = || {
                format!(
                    "[cache_server] trusted_proxies: {entry:?} is not an address or a CIDR block; \
                     write them as 10.0.0.5, 10.1.0.0/16, ::1"
                )
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(bad)?,
                None => max,
            };
            blocks.push((addr, bits));
        }
        Ok(TrustedProxies(blocks))
    }

    /// Whether `addr` is listed.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0
            .iter()
            .any(|(block, bits)| in_block(addr, canonical(*block), *bits))
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.5`, a dual-stack listener) as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(addr: IpAddr, block: IpAddr, bits: u8) -> bool {
    match (addr, block) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Sets the forwarding headers of a request that came in from `peer`, over TLS or not. From a
/// trusted proxy, its `X-Forwarded-For` is kept (the peer appended), and its `-Proto` and
/// `-Host` win; from anyone else, what it sent in them is dropped. `Forwarded` is always
/// dropped: oslo.middleware prefers it and keeps the quotes RFC 7239 puts around `host:port`.
/// Returns the `X-Forwarded-For` chain a trusted proxy sent, for the access log.
pub(crate) fn at_the_edge(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    tls: bool,
    trusted: &TrustedProxies,
) -> Option<String> {
    headers.remove(FORWARDED);
    let peer_ip = canonical(peer.ip());
    let believed = trusted.contains(peer_ip);
    let chain = believed
        .then(|| {
            let sent: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            sent.join(", ")
        })
        .filter(|chain| !chain.trim().is_empty());
    let value = match &chain {
        Some(chain) => format!("{chain}, {peer_ip}"),
        None => peer_ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto_sent = headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https");
    let proto = match (believed, proto_sent) {
        (true, Some(sent)) => HeaderValue::from_str(&sent).ok(),
        _ => None,
    }
    .unwrap_or(HeaderValue::from_static(if tls { "https" } else { "http" }));
    headers.insert(X_FORWARDED_PROTO, proto);
    if !(believed && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(sent: &[(&str, &str)], peer: &str, tls: bool, trusted: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in sent {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        at_the_edge(
            &mut headers,
            peer.parse().unwrap(),
            tls,
            &TrustedProxies::parse(trusted).unwrap(),
        );
        headers
    }

    #[test]
    fn an_untrusted_caller_cannot_choose_what_the_upstream_is_told() {
        let headers = edge(
            &[
                ("host", "node:9292"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=6.6.6.6"),
            ],
            "192.0.2.7:5000",
            false,
            "10.0.0.0/8",
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        assert_eq!(headers[&X_FORWARDED_HOST], "node:9292");
        assert!(!headers.contains_key(FORWARDED));
    }

    #[test]
    fn a_trusted_proxy_s_headers_are_kept_and_the_peer_appended() {
        let from_balancer = [
            ("host", "node:9292"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "images.example.com"),
        ];
        let trusted = "10.1.0.0/16, ::1";
        let headers = edge(&from_balancer, "[::ffff:10.1.2.3]:5000", false, trusted);
        assert_eq!(headers[&X_FORWARDED_FOR], "203.0.113.9, 10.1.2.3");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(headers[&X_FORWARDED_HOST], "images.example.com");
    }

    #[test]
    fn tls_is_told_as_https() {
        let headers = edge(&[("host", "node:9292")], "[::1]:5000", true, "");
        assert_eq!(headers[&X_FORWARDED_FOR], "::1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse("10.0.0.1, 10.0.0.0/40").unwrap_err();
        assert!(err.contains("\"10.0.0.0/40\""), "{err}");
        assert!(TrustedProxies::parse("lb.example").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
