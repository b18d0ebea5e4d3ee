//! The accept loop: each connection served by hyper in a task of its own,
//! watched so that it must make progress (a first byte, a first request, no
//! idle keep-alive beyond a limit, request bodies that keep flowing), with a
//! cap on connections per client address, and a graceful shutdown that stops
//! accepting, lets in-flight requests finish, and closes idle connections.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;

use crate::error::OciCode;

mod body;
mod io;
mod service;

pub use body::BodyStalled;

/// Who is at the other end of a connection; every request carries it as an
/// extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A unix socket: local by nature, guarded by its file's permissions.
    Unix,
}

impl Peer {
    /// Whether the peer is on this machine: a loopback address or a unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Peer::Tcp(a) => a.ip().is_loopback() || a.ip().to_canonical().is_loopback(),
            Peer::Unix => true,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip().to_canonical()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// Listener addresses that name a peer.
pub trait PeerAddr {
    fn peer(&self) -> Peer;
}

impl PeerAddr for SocketAddr {
    fn peer(&self) -> Peer {
        Peer::Tcp(*self)
    }
}

impl PeerAddr for tokio::net::unix::SocketAddr {
    fn peer(&self) -> Peer {
        Peer::Unix
    }
}

/// How long a connection may go without progress, and how many one client
/// address may hold (Berth's `http.timeouts` and `http.limits`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// The first byte of a connection must arrive within this.
    pub first_byte: Duration,
    /// The first request's headers (HTTP/1), and the first request of an
    /// HTTP/2 connection, must arrive within this.
    pub header: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle: Duration,
    /// A request body that sends nothing for this long is cut off.
    pub body_idle: Duration,
    /// Over each `body_idle` window a request body must bring at least this
    /// many bytes per second (0: no minimum).
    pub min_body_rate: u64,
    /// Open connections per client address (0: no limit).
    pub per_client: usize,
    /// Open connections in all (0: no limit): past it a new connection is
    /// answered 503 with `Retry-After` and closed.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            first_byte: Duration::from_secs(10),
            header: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            body_idle: Duration::from_secs(60),
            min_body_rate: 1024,
            per_client: 256,
            max_connections: 4096,
        }
    }
}

/// Open connections by client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot { table: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits at most
/// `drain` for open connections to finish. Returns whether they all did.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> bool
where
    L: Listener,
    L::Io: Unpin + Send + 'static,
    L::Addr: PeerAddr,
{
    let limits = Arc::new(limits);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let clients = Arc::new(PerClient::default());
    let open = Arc::new(tokio::sync::Semaphore::new(match limits.max_connections {
        0 => tokio::sync::Semaphore::MAX_PERMITS,
        n => n.min(tokio::sync::Semaphore::MAX_PERMITS),
    }));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // The listener retries and logs accept errors (such as running out of descriptors) itself.
            (io, addr) = listener.accept() => {
                let peer = addr.peer();
                let Ok(held) = open.clone().try_acquire_owned() else {
                    tokio::spawn(over_capacity(io, peer));
                    continue;
                };
                let slot = match peer.ip() {
                    Some(ip) => match clients.take(ip, limits.per_client) {
                        Some(slot) => Some(slot),
                        None => {
                            tokio::spawn(too_many_connections(io, peer));
                            continue;
                        }
                    },
                    None => None,
                };
                let state = Arc::new(io::ConnState::new());
                let io = io::Watched::new(io, state.clone(), limits.clone());
                let svc = service::ConnService::new(router.clone(), peer, state, limits.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop((slot, held));
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::time::timeout(drain, graceful.shutdown()).await.is_ok()
}

/// Answers a connection past the process's cap with 503 and closes it.
async fn over_capacity<I: tokio::io::AsyncWrite + Unpin>(mut io: I, peer: Peer) {
    tracing::warn!(peer = %peer, "too many open connections; refused");
    let resp = io::error_response(
        OciCode::Unavailable,
        "the registry holds as many connections as it may (http.limits.connections); retry shortly",
        "retry-after: 1\r\n",
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = io.write_all(&resp).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Answers a connection over its address's cap with 429 and closes it.
async fn too_many_connections<I: tokio::io::AsyncWrite + Unpin>(mut io: I, peer: Peer) {
    tracing::warn!(peer = %peer, "too many connections from one address; refused");
    let resp = io::error_response(
        OciCode::TooManyRequests,
        "too many open connections from this address (http.limits.connectionsperclient)",
        "retry-after: 1\r\n",
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = io.write_all(&resp).await;
        let _ = io.shutdown().await;
    })
    .await;
}
