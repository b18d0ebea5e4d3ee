//! Several registries behind one listener, chosen by the name the client
//! asked for: the `Host` header (HTTP/1.1) or the request's authority
//! (HTTP/2), and `X-Forwarded-Host` or `Forwarded: host=` only from a peer in
//! `http.trustedproxies`. A name is matched with its port first, then
//! without it. A name no registry serves goes to the default registry, or is
//! answered `421 Misdirected Request` with an OCI error body.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::error::{ApiError, OciCode};
use crate::{Cidr, Peer};

/// Registries by the host names they answer.
#[derive(Clone)]
pub struct VirtualHosts {
    routers: Vec<Router>,
    by_host: HashMap<String, usize>,
    default: Option<usize>,
    trusted_proxies: Vec<Cidr>,
}

impl VirtualHosts {
    /// `registries`: each registry's names (lowercase, with or without a
    /// port) and its service; `default` indexes the one an unknown name goes
    /// to. A name listed twice is an error naming it.
    pub fn new(
        registries: Vec<(Vec<String>, Router)>,
        default: Option<usize>,
        trusted_proxies: Vec<Cidr>,
    ) -> Result<VirtualHosts, String> {
        let mut by_host = HashMap::new();
        let mut routers = Vec::with_capacity(registries.len());
        for (i, (hosts, router)) in registries.into_iter().enumerate() {
            for h in hosts {
                let h = normalize(&h);
                if by_host.insert(h.clone(), i).is_some() {
                    return Err(format!("host {h} is served by two registries"));
                }
            }
            routers.push(router);
        }
        if default.is_some_and(|d| d >= routers.len()) {
            return Err("the default registry is not among the registries".to_owned());
        }
        Ok(VirtualHosts { routers, by_host, default, trusted_proxies })
    }

    /// The registry serving `host` (as the client wrote it), if any.
    pub fn select(&self, host: Option<&str>) -> Option<usize> {
        let found = host
            .map(normalize)
            .and_then(|h| self.by_host.get(&h).or_else(|| self.by_host.get(strip_port(&h))).copied());
        found.or(self.default)
    }

    /// The whole service: each request handed to its registry's router.
    pub fn into_router(self) -> Router {
        Router::new().fallback(move |req: Request| {
            let hosts = self.clone();
            async move { Ok::<_, Infallible>(hosts.route(req).await) }
        })
    }

    async fn route(&self, req: Request) -> Response {
        let peer = req.extensions().get::<Peer>().copied();
        let host = requested_host(&req, peer, &self.trusted_proxies);
        match self.select(host.as_deref()) {
            Some(i) => match self.routers[i].clone().oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            None => {
                tracing::info!(host = host.as_deref().unwrap_or(""), "no registry serves this host");
                let mut resp = ApiError::new(OciCode::Misdirected)
                    .with_detail(format!("no registry is served at {:?}", host.unwrap_or_default()))
                    .into_response();
                resp.headers_mut().insert(crate::API_VERSION, HeaderValue::from_static("registry/2.0"));
                resp
            }
        }
    }
}

/// The host a request names: a trusted proxy's forwarded host, else the
/// authority of an HTTP/2 request, else `Host`.
fn requested_host(req: &Request, peer: Option<Peer>, trusted: &[Cidr]) -> Option<String> {
    let h = req.headers();
    if from_trusted_proxy(peer, trusted) {
        if let Some(fwd) = forwarded_host(h) {
            return Some(fwd);
        }
    }
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    h.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn from_trusted_proxy(peer: Option<Peer>, trusted: &[Cidr]) -> bool {
    match peer {
        Some(Peer::Unix) => !trusted.is_empty(),
        Some(p) => p.ip().is_some_and(|ip| trusted.iter().any(|c| c.contains(ip))),
        None => false,
    }
}

/// The first forwarded host: `X-Forwarded-Host`, else `Forwarded: host=`.
fn forwarded_host(h: &HeaderMap) -> Option<String> {
    let first = |v: &HeaderValue| v.to_str().ok().and_then(|s| s.split(',').next()).map(|s| s.trim().to_owned());
    if let Some(x) = h.get("x-forwarded-host").and_then(first).filter(|s| !s.is_empty()) {
        return Some(x);
    }
    let fwd = h.get(header::FORWARDED).and_then(first)?;
    fwd.split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// A host name as compared: lowercase, without a trailing dot.
fn normalize(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    let name = strip_port(&h);
    let port = &h[name.len()..];
    format!("{}{port}", name.trim_end_matches('.'))
}

/// `name:port` without its port (`[::1]:5000` → `[::1]`); a name without one as it is.
fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &h[..end + 2],
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(default: Option<usize>) -> VirtualHosts {
        VirtualHosts::new(
            vec![
                (vec!["ci.example.test".into(), "ci.example.test:5000".into()], Router::new()),
                (vec!["Cache.Example.Test:5001".into(), "[::1]".into()], Router::new()),
            ],
            default,
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
        )
        .unwrap()
    }

    #[test]
    fn names_match_with_their_port_then_without() {
        let v = hosts(None);
        assert_eq!(v.select(Some("ci.example.test")), Some(0));
        assert_eq!(v.select(Some("CI.example.test:5000")), Some(0));
        assert_eq!(v.select(Some("ci.example.test:9999")), Some(0), "a name listed without a port matches any");
        assert_eq!(v.select(Some("ci.example.test.")), Some(0), "a trailing dot is the same name");
        assert_eq!(v.select(Some("cache.example.test:5001")), Some(1));
        assert_eq!(v.select(Some("cache.example.test")), None, "listed only with its port");
        assert_eq!(v.select(Some("cache.example.test:5002")), None);
        assert_eq!(v.select(Some("[::1]:5000")), Some(1));
        assert_eq!(v.select(Some("other.example.test")), None);
        assert_eq!(v.select(None), None);
        assert_eq!(hosts(Some(1)).select(Some("other.example.test")), Some(1), "the default takes the rest");
        assert_eq!(hosts(Some(1)).select(None), Some(1));
    }

    #[test]
    fn a_name_served_twice_is_refused() {
        let twice =
            vec![(vec!["a.example.test".into()], Router::new()), (vec!["A.example.test".into()], Router::new())];
        let e = VirtualHosts::new(twice, None, vec![]).err().expect("refused");
        assert!(e.contains("a.example.test"), "{e}");
        assert!(VirtualHosts::new(vec![(vec![], Router::new())], Some(1), vec![]).is_err());
    }

    #[test]
    fn forwarded_hosts_count_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let req = |fwd: (&str, &str)| {
            axum::http::Request::builder()
                .uri("/v2/")
                .header(header::HOST, "ci.example.test")
                .header(fwd.0, fwd.1)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let proxy = Some(Peer::Tcp("10.0.0.5:40000".parse().unwrap()));
        let stranger = Some(Peer::Tcp("192.0.2.9:40000".parse().unwrap()));
        let r = req(("x-forwarded-host", "cache.example.test:5001, ci.example.test"));
        assert_eq!(requested_host(&r, proxy, &trusted).as_deref(), Some("cache.example.test:5001"));
        assert_eq!(requested_host(&r, stranger, &trusted).as_deref(), Some("ci.example.test"));
        assert_eq!(requested_host(&r, proxy, &[]).as_deref(), Some("ci.example.test"));
        let f = req(("forwarded", r#"for=192.0.2.1;host="cache.example.test:5001";proto=https"#));
        assert_eq!(requested_host(&f, proxy, &trusted).as_deref(), Some("cache.example.test:5001"));
        assert_eq!(requested_host(&f, stranger, &trusted).as_deref(), Some("ci.example.test"));
    }
}
