//! Small-request load with `wrk`, and a trivial server that shows wrk's own
//! ceiling on this machine.

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn parse_latency(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    num.trim().parse::<f64>().ok().map(|x| x * mult)
}

fn parse(out: &str) -> Result<Load> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk printed no Requests/sec")?;
    let pct = |p: &str| {
        out.lines().find_map(|l| {
            let l = l.trim();
            l.strip_prefix(p).and_then(parse_latency)
        })
    };
    if let Some(bad) = out.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        bail!("wrk saw errors: {}", bad.trim());
    }
    Ok(Load { rps, p50_ms: pct("50%").context("no p50")?, p99_ms: pct("99%").context("no p99")? })
}

/// Runs wrk for `secs` seconds with `conns` connections against `url`.
pub fn run(url: &str, method: &str, headers: &[(&str, &str)], conns: u32, secs: u32, work: &Path) -> Result<Load> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", &conns.to_string(), "-d", &format!("{secs}s"), "--latency", "--timeout", "10s"]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if method != "GET" {
        let script = work.join(format!("method-{method}.lua"));
        std::fs::write(&script, format!("wrk.method = \"{method}\"\n"))?;
        cmd.arg("-s").arg(script);
    }
    cmd.arg(url);
    let out = cmd.output().context("running wrk (install it with scripts/install-test-deps.sh)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// A server that answers every request with `{}` and nothing else: what
/// wrk reaches against it is the most any server can show here.
pub async fn ceiling_server() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://x\n  Latency Distribution\n     50%  512.00us\n     75%    1.2ms\n     90%    2ms\n     99%    5.69ms\n  93000 requests in 5.00s, 1MB read\nRequests/sec:  18645.71\nTransfer/sec: 1MB\n";
        let l = super::parse(out).unwrap();
        assert_eq!(l.rps, 18645.71);
        assert!((l.p50_ms - 0.512).abs() < 1e-9);
        assert!((l.p99_ms - 5.69).abs() < 1e-9);
        assert!(super::parse("Requests/sec: 1\n 50% 1ms\n 99% 2ms\nNon-2xx or 3xx responses: 3\n").is_err());
    }
}
