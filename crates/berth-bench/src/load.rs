//! A closed-loop HTTP/1.1 load generator for what wrk cannot do: wrk's parser
//! waits for a body after a HEAD answer's Content-Length, so HEAD requests
//! are measured here. Its own ceiling is measured the same way as wrk's.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::wrk::Load;

/// `conns` connections each sending `method` requests back to back for `secs`
/// seconds (on a runtime of `threads` threads); latencies of every request.
pub fn run(addr: &str, method: &str, path: &str, headers: &[(String, String)], conns: u32, secs: u32) -> Result<Load> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs.into());
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (addr, method, path, headers) = (addr.to_owned(), method.to_owned(), path.to_owned(), headers.to_vec());
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let mut lat = Vec::with_capacity(1 << 16);
                while Instant::now() < deadline && lat.len() < 10_000_000 {
                    let mut req = hyper::Request::builder().method(method.as_str()).uri(&path).header("host", &addr);
                    for (k, v) in &headers {
                        req = req.header(k, v);
                    }
                    let req = req.body(Empty::<Bytes>::new())?;
                    let t = Instant::now();
                    let resp = send.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    lat.push(t.elapsed());
                    if !status.is_success() {
                        bail!("{method} {path} answered {status}");
                    }
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        if all.is_empty() {
            bail!("no request completed");
        }
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
        Ok(Load { rps: all.len() as f64 / secs as f64, p50_ms: pct(0.50), p99_ms: pct(0.99) })
    })
}
