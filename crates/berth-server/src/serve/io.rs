//! A connection's socket, watched: it must bring a first byte, then a first
//! request, in time, and a connection with nothing in flight is closed once it
//! has been idle too long, whatever its protocol (hyper bounds only an
//! HTTP/1 connection's header reads). hyper's own answers to requests it
//! cannot parse (400, 414, 431 with an empty body) are replaced here by the
//! same status with an OCI error body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::ConnectionLimits;
use crate::error::OciCode;

/// What a connection's requests and its socket share.
pub(crate) struct ConnState {
    started: Instant,
    /// Requests whose response has not been sent whole yet.
    in_flight: AtomicUsize,
    /// Whether a request has arrived on this connection.
    requested: AtomicBool,
    /// Milliseconds since `started` of the last byte read or written.
    last_activity: AtomicU64,
}

impl ConnState {
    pub(crate) fn new() -> Self {
        ConnState {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            last_activity: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn request_started(&self) {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    pub(crate) fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the connection must have shown progress by, given what it did so far.
    fn deadline(&self, limits: &ConnectionLimits, read_any: bool) -> Instant {
        if !read_any {
            return self.started + limits.first_byte;
        }
        let idle_from = self.started + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        if !self.requested.load(Ordering::Relaxed) {
            return (self.started + limits.header).min(idle_from + limits.idle);
        }
        idle_from + limits.idle
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

pub(crate) struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
    timer: Pin<Box<Sleep>>,
    read_any: bool,
    /// HTTP/2 connections carry no parse-error heads of hyper's to replace.
    h2: bool,
    /// A replacement answer still to be written, and how much of it went.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO> Watched<IO> {
    pub(crate) fn new(io: IO, state: Arc<ConnState>, limits: Arc<ConnectionLimits>) -> Self {
        let first = state.started + limits.first_byte;
        Watched {
            io,
            state,
            limits,
            timer: Box::pin(tokio::time::sleep_until(first)),
            read_any: false,
            h2: false,
            pending: None,
        }
    }

    /// hyper's own head for a request it could not parse: written while no
    /// request of ours is in flight, a 4xx, without the header every answer
    /// of the router carries.
    fn replacement(&self, buf: &[u8]) -> Option<Vec<u8>> {
        if self.h2 || self.state.busy() {
            return None;
        }
        let head = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
        // Only hyper's three statuses are looked at further: any other write costs a comparison.
        let (code, detail) = match head.get(..4)? {
            b"400 " => (
                OciCode::MalformedRequest,
                "the request could not be parsed (malformed request line, headers or Content-Length)",
            ),
            b"414 " => (OciCode::UriTooLong, "the request URI is longer than 65534 bytes"),
            b"431 " => (OciCode::HeadersTooLarge, "the request has too many headers or headers too large"),
            _ => return None,
        };
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let lower = buf[..end].to_ascii_lowercase();
        if lower.windows(31).any(|w| w == b"docker-distribution-api-version") {
            return None;
        }
        Some(error_response(code, detail, ""))
    }
}

impl<IO: AsyncWrite + Unpin> Watched<IO> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done >= buf.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// A whole HTTP/1.1 answer with an OCI error body that closes the connection;
/// `extra` holds more header lines, each ending in CRLF.
pub(crate) fn error_response(code: OciCode, detail: &str, extra: &str) -> Vec<u8> {
    let (code, status, message) = code.describe();
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": detail }] }).to_string();
    let (reason, status) = (status.canonical_reason().unwrap_or(""), status.as_u16());
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         docker-distribution-api-version: registry/2.0\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("connection closed: {what}"))
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    if !this.read_any && got.starts_with(H2_PREFACE) {
                        this.h2 = true;
                    }
                    this.read_any = true;
                    this.state.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // While a request is in flight its body has its own watch (and a
                // response may take long to compute). Both HTTP/1 and HTTP/2 read
                // again once it is done, and the watch starts then.
                if this.state.busy() {
                    return Poll::Pending;
                }
                loop {
                    let now = Instant::now();
                    let deadline = this.state.deadline(&this.limits, this.read_any);
                    if now >= deadline {
                        let what = if !this.read_any {
                            "no data arrived"
                        } else if !this.state.requested.load(Ordering::Relaxed) {
                            "no request arrived"
                        } else {
                            "idle"
                        };
                        tracing::debug!(reason = what, "closing a connection that made no progress");
                        return Poll::Ready(Err(timed_out(what)));
                    }
                    this.timer.as_mut().reset(deadline);
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(r) = this.replacement(buf) {
            this.pending = Some((r, 0));
            // The head hyper meant to send is taken whole; ours goes instead.
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        if n > 0 {
            this.state.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(r) = bufs.first().and_then(|b| this.replacement(b)) {
            this.pending = Some((r, 0));
            return Poll::Ready(Ok(bufs[0].len()));
        }
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.state.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parse_error_heads_of_hyper_are_replaced_and_ours_are_not() {
        let w = Watched::new((), Arc::new(ConnState::new()), Arc::new(ConnectionLimits::default()));
        let hyper_head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = String::from_utf8(w.replacement(hyper_head).expect("replaced")).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
        assert!(r.contains(&format!("content-length: {}\r\n", body.len())));
        let ours =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\ndocker-distribution-api-version: registry/2.0\r\n\r\n";
        assert!(w.replacement(ours).is_none());
        assert!(w.replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(w.replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(w.replacement(b"some blob bytes").is_none());
        w.state.request_started();
        assert!(w.replacement(hyper_head).is_none(), "not while a request of ours is in flight");
    }
}
