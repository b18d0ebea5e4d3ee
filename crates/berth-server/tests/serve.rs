//! The accept loop over real loopback sockets: connections must make
//! progress, one address may hold only so many, hyper's own rejections carry
//! OCI error bodies, and a panicking handler answers 500 on a connection that
//! goes on serving.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_metadata::Metadata;
use berth_registry::{Registry, RegistryConfig};
use berth_server::{ConnectionLimits, ServerConfig};
use berth_storage::fs::FsDriver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: ConnectionLimits) -> Server {
    start_with(limits, ServerConfig::default()).await
}

async fn start_with(limits: ConnectionLimits, config: ServerConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsDriver::new(dir.path().join("store")).unwrap());
    let (meta, _) = Metadata::open_sqlite(&dir.path().join("meta.sqlite")).await.unwrap();
    let registry = Registry::new(storage, meta, RegistryConfig::default());
    let extra = axum::Router::new().route(
        "/test/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("a handler bug");
            }
            "unreachable"
        }),
    );
    let router = berth_server::router_with(registry, config, extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        berth_server::serve(listener, router, limits, s.cancelled_owned(), Duration::from_secs(1)).await;
    });
    Server { addr, _dir: dir, stop }
}

fn quick() -> ConnectionLimits {
    ConnectionLimits {
        first_byte: Duration::from_millis(300),
        header: Duration::from_millis(600),
        idle: Duration::from_millis(600),
        body_idle: Duration::from_millis(400),
        min_body_rate: 1000,
        per_client: 0,
        max_connections: 0,
    }
}

/// Reads until the peer closes (or `within` passes, which fails the test).
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out)).await.expect("the server closed the connection").ok();
    out
}

/// Reads one whole response with a Content-Length body.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a whole response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
            }
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_connection_goes_on() {
    let srv = start(ConnectionLimits::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /test/panic HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 500);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], "UNKNOWN");
    s.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200, "the same connection serves the next request");
}

#[tokio::test]
async fn connections_that_make_no_progress_are_closed() {
    let srv = start(quick()).await;
    // Nothing at all.
    let t = Instant::now();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(t.elapsed() >= Duration::from_millis(250), "not before the first-byte timeout");
    // An HTTP/2 preface, then nothing.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    read_to_close(&mut s, Duration::from_secs(10)).await;
    // One request, then idle.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    let t = Instant::now();
    read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(t.elapsed() >= Duration::from_millis(500), "kept for the idle time");
}

#[tokio::test]
async fn a_trickling_body_is_cut_and_a_slow_steady_one_is_not() {
    let srv = start(quick()).await;
    // One byte every 100 ms: never idle, far below 1000 bytes per second.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head =
        "POST /v2/t/blobs/uploads/?digest=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
                HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b"x").await.is_err() || rx.try_recv().is_ok() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(8), r.read(&mut buf)).await.unwrap().unwrap();
    let _ = tx.send(());
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("BLOB_UPLOAD_INVALID") && text.contains("below the minimum"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "cut after a window, not after the whole body");
    writer.abort();

    // 2,000 bytes in 200-byte pieces every 50 ms (4,000 bytes a second, four
    // times the minimum even on a busy machine): it arrives whole.
    let data = vec![7u8; 2000];
    let digest = berth_types::Digest::of_bytes(&data);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!("POST /v2/t/blobs/uploads/?digest={digest} HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in data.chunks(200) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(piece).await.unwrap();
    }
    assert_eq!(read_response(&mut s).await.0, 201);
}

#[tokio::test]
async fn one_address_may_hold_only_so_many_connections() {
    let srv = start(ConnectionLimits { per_client: 3, ..ConnectionLimits::default() }).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    let mut fourth = TcpStream::connect(srv.addr).await.unwrap();
    let (status, body) = read_response(&mut fourth).await;
    assert_eq!(status, 429);
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
    // A closed connection frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(srv.addr).await.unwrap();
    again.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut again).await.0, 200);
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_oci_error_bodies() {
    let srv = start(ConnectionLimits::default()).await;
    let many_headers: String = (0..10_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_path = format!("/v2/{}/tags/list", "a".repeat(70_000));
    let cases: Vec<(String, u16)> = vec![
        ("GET /v2/ HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".into(), 400),
        ("POST /v2/ HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".into(), 400),
        (format!("GET /v2/ HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"), 431),
        (format!("GET {long_path} HTTP/1.1\r\nhost: x\r\n\r\n"), 414),
    ];
    for (req, want) in cases {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let _ = s.write_all(req.as_bytes()).await;
        let text = String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(10)).await).into_owned();
        assert!(text.starts_with(&format!("HTTP/1.1 {want} ")), "{want}: {}", &text[..text.len().min(200)]);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{want}: {e}: {body:?}"));
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{want}");
    }
    // Bad chunked framing reaches the handler, which answers in OCI JSON too.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /v2/t/blobs/uploads/?digest=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx\r\n").await.unwrap();
    let text = String::from_utf8_lossy(&read_to_close(&mut s, Duration::from_secs(10)).await).into_owned();
    assert!(text.starts_with("HTTP/1.1 400 ") && text.contains("\"errors\""), "{text}");
}

#[tokio::test]
async fn the_process_holds_only_so_many_connections() {
    let srv = start(ConnectionLimits { max_connections: 2, per_client: 0, ..ConnectionLimits::default() }).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    let text = String::from_utf8_lossy(&read_to_close(&mut third, Duration::from_secs(10)).await).into_owned();
    assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("\"UNAVAILABLE\""), "{text}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(srv.addr).await.unwrap();
    again.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut again).await.0, 200, "a closed connection frees its place");
}

#[tokio::test]
async fn streaming_requests_past_the_budget_are_told_to_retry() {
    let srv = start_with(
        ConnectionLimits::default(),
        ServerConfig { streams: berth_server::StreamLimit::new(1), ..ServerConfig::default() },
    )
    .await;
    let mut a = TcpStream::connect(srv.addr).await.unwrap();
    a.write_all(b"POST /v2/s/blobs/uploads/ HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), a.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("location: ")).unwrap().trim().to_owned();
    let path = location.strip_prefix("http://x").unwrap_or(&location).to_owned();
    // One chunk in flight, its body not all sent: it holds the only place.
    let chunk = vec![7u8; 1000];
    a.write_all(format!("PATCH {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n").as_bytes()).await.unwrap();
    a.write_all(&chunk[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = "sha256:6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";
    let push = format!("POST /v2/s/blobs/uploads/?digest={d} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n\0");
    let mut b = TcpStream::connect(srv.addr).await.unwrap();
    b.write_all(push.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut b).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("UNAVAILABLE") && body.contains("http.limits.streams"), "{body}");
    // What streams nothing is not held back.
    b.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut b).await.0, 200);
    // The chunk ends, its place is free again.
    a.write_all(&chunk[10..]).await.unwrap();
    assert_eq!(read_response(&mut a).await.0, 202);
    b.write_all(push.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut b).await.0, 201);
}
