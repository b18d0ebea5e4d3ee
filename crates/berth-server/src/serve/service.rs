//! The per-connection service in front of the router: each request gets its
//! [`Peer`] as an extension and a body that must keep flowing, and the
//! connection knows while a request is in flight (until its response body has
//! been sent whole or dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use tower::Service;

use super::body::GuardedBody;
use super::io::ConnState;
use super::{ConnectionLimits, Peer};

#[derive(Clone)]
pub(crate) struct ConnService {
    router: Router,
    peer: Peer,
    state: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
}

impl ConnService {
    pub(crate) fn new(router: Router, peer: Peer, state: Arc<ConnState>, limits: Arc<ConnectionLimits>) -> Self {
        ConnService { router, peer, state, limits }
    }
}

impl Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = http::Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        self.state.request_started();
        let guard = InFlight(self.state.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(self.peer);
        let body = Body::new(GuardedBody::new(body, self.limits.body_idle, self.limits.min_body_rate));
        let req = http::Request::from_parts(parts, body);
        let mut router = self.router.clone();
        Box::pin(async move {
            let resp = match router.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let (parts, body) = resp.into_parts();
            Ok(http::Response::from_parts(parts, Tracked { inner: body, _guard: guard }))
        })
    }
}

/// Ends the request's time in flight when dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
pub(crate) struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
