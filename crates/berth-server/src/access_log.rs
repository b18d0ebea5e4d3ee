//! The access log line, written when a response body ends (or is dropped,
//! when the client goes away): status, bytes actually written and the whole
//! duration, in the request's span, so the line also carries the request's
//! id, method, URI, peer, user agent and user.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;

pub(crate) struct Logged {
    inner: Body,
    span: tracing::Span,
    start: Instant,
    status: u16,
    written: u64,
    done: bool,
}

impl Logged {
    pub(crate) fn new(inner: Body, span: tracing::Span, start: Instant, status: u16) -> Self {
        Logged { inner, span, start, status, written: 0, done: false }
    }

    fn log(&mut self, complete: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        let _e = self.span.enter();
        tracing::info!(
            "http.response.status" = self.status,
            "http.response.written" = self.written,
            "http.response.duration" = %format!("{ms:.3}ms"),
            "http.response.complete" = complete,
            "response completed"
        );
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.written += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.log(true),
            Poll::Ready(Some(Err(_))) => this.log(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // An empty body may be dropped without being polled; a cut one was not whole.
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.log(complete);
    }
}
