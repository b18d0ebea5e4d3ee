//! Who asks: the [`Caller`] the registry is told of, built once per request
//! from its grant, its id, its peer and its headers. A forwarded client
//! address (`X-Forwarded-For`, `Forwarded: for=`) is believed only from a
//! peer in `http.trustedproxies`; from anyone else the peer's own address
//! stands.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use berth_auth::Grant;
use berth_registry::Caller;

use crate::Peer;

/// The request's id, put on the request by the middleware that answers it
/// in `X-Request-Id`.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// An address range, `10.0.0.0/8` or `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or a range (10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{s:?}: prefix must be 0 to {max}"))?
            }
        };
        Ok(Cidr { net: net.to_canonical(), bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An address as forwarding headers write it: maybe quoted, maybe with a
/// port, IPv6 maybe in brackets.
fn forwarded_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']').and_then(|(a, _)| a.parse().ok());
    }
    s.rsplit_once(':').and_then(|(a, _)| a.parse().ok())
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last forwarded address that is not itself a trusted proxy.
pub(crate) fn client_addr(peer: Option<Peer>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer_ip = peer.and_then(|p| p.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let from_proxy = match (peer, peer_ip) {
        (Some(Peer::Unix), _) => !trusted.is_empty(),
        (_, Some(ip)) => is_trusted(ip),
        _ => false,
    };
    if !from_proxy {
        return peer_ip;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
        chain.extend(v.split(',').filter_map(forwarded_addr));
    }
    if chain.is_empty() {
        for v in headers.get_all(header::FORWARDED).iter().filter_map(|v| v.to_str().ok()) {
            for element in v.split(',') {
                let fors = element.split(';').filter_map(|p| p.trim().split_once('='));
                chain
                    .extend(fors.filter(|(k, _)| k.eq_ignore_ascii_case("for")).filter_map(|(_, v)| forwarded_addr(v)));
            }
        }
    }
    chain.iter().rev().copied().find(|ip| !is_trusted(*ip)).or(chain.first().copied()).or(peer_ip)
}

/// The caller of a request.
pub(crate) fn caller(
    grant: Option<&Grant>,
    request_id: Option<&RequestId>,
    peer: Option<Peer>,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Caller {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Caller {
        identity: grant.and_then(|g| g.identity.user.clone()),
        request_id: request_id.map(|r| r.0.clone()).unwrap_or_default(),
        remote_addr: client_addr(peer, headers, trusted),
        host: text(header::HOST),
        user_agent: text(header::USER_AGENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_say() {
        let r = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(r.contains(ip("10.1.200.3")) && !r.contains(ip("10.2.0.1")));
        assert!(r.contains(ip("::ffff:10.1.0.9")), "an IPv4-mapped address is the IPv4 address");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "example.test", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy = Some(Peer::Tcp("10.0.0.5:40000".parse().unwrap()));
        let stranger = Some(Peer::Tcp("192.0.2.9:40000".parse().unwrap()));
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1, 203.0.113.4, 10.0.0.3".parse().unwrap());
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("203.0.113.4")), "the last hop not a proxy");
        assert_eq!(client_addr(stranger, &h, &trusted), Some(ip("192.0.2.9")), "a stranger's header is ignored");
        assert_eq!(client_addr(proxy, &h, &[]), Some(ip("10.0.0.5")), "no trusted proxies: the peer");
        let mut f = HeaderMap::new();
        f.insert(header::FORWARDED, r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.2"#.parse().unwrap());
        assert_eq!(client_addr(proxy, &f, &trusted), Some(ip("2001:db8::7")));
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), Some(ip("10.0.0.5")), "nothing forwarded");
        assert_eq!(client_addr(Some(Peer::Unix), &h, &[]), None);
    }

    #[test]
    fn a_caller_carries_the_request_id_host_agent_and_address() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "registry.example.test".parse().unwrap());
        h.insert(header::USER_AGENT, "docker/27".parse().unwrap());
        h.insert("x-forwarded-for", "203.0.113.4".parse().unwrap());
        let peer = Some(Peer::Tcp("192.0.2.9:40000".parse().unwrap()));
        let c = caller(None, Some(&RequestId("r1".into())), peer, &h, &[]);
        assert_eq!(
            c,
            Caller {
                identity: None,
                request_id: "r1".into(),
                remote_addr: Some(ip("192.0.2.9")),
                host: Some("registry.example.test".into()),
                user_agent: Some("docker/27".into()),
            }
        );
        assert_eq!(c.name(), "anonymous");
    }
}
