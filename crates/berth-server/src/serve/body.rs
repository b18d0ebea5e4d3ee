//! A request body that must keep flowing: one that brings nothing for
//! `body_idle`, or less than `min_body_rate` bytes a second over a window of
//! that length, ends with an error, so a handler reading it answers and the
//! connection is freed. A slow upload that keeps moving is never cut.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a body was cut off; handlers see it as the body's read error.
#[derive(Debug, thiserror::Error)]
pub enum BodyStalled {
    #[error("the request body sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the request body brought {got} bytes in {window:?}, below the minimum of {min} bytes per second")]
    TooSlow { got: u64, window: Duration, min: u64 },
}

pub(crate) struct GuardedBody<B> {
    inner: B,
    idle: Duration,
    min_rate: u64,
    /// Made the first time the body has to wait (most requests have none).
    timer: Option<Pin<Box<Sleep>>>,
    last_frame: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl<B> GuardedBody<B> {
    pub(crate) fn new(inner: B, idle: Duration, min_rate: u64) -> Self {
        let now = Instant::now();
        GuardedBody { inner, idle, min_rate, timer: None, last_frame: now, window_start: now, window_bytes: 0 }
    }

    /// Closes a rate window that has run its length.
    fn check_rate(&mut self, now: Instant) -> Result<(), BodyStalled> {
        let window = now.duration_since(self.window_start);
        if window < self.idle || self.idle.is_zero() {
            return Ok(());
        }
        let min = u64::try_from(u128::from(self.min_rate) * window.as_millis() / 1000).unwrap_or(u64::MAX);
        if self.window_bytes < min {
            return Err(BodyStalled::TooSlow { got: self.window_bytes, window, min: self.min_rate });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if let Some(d) = frame.data_ref() {
                    this.window_bytes = this.window_bytes.saturating_add(d.len() as u64);
                }
                this.last_frame = now;
                this.check_rate(now)?;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.idle.is_zero() {
                    return Poll::Pending;
                }
                loop {
                    let now = Instant::now();
                    this.check_rate(now)?;
                    let deadline = (this.last_frame + this.idle).min(this.window_start + this.idle);
                    if now >= this.last_frame + this.idle {
                        return Poll::Ready(Some(Err(BodyStalled::Idle(this.idle).into())));
                    }
                    let at = deadline.max(now + Duration::from_millis(1));
                    let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    timer.as_mut().reset(at);
                    ready!(timer.as_mut().poll(cx));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body sending `chunk` bytes every `every`, `count` times.
    fn trickle(chunk: usize, every: Duration, count: usize) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let s = futures_util::stream::unfold(0, move |i| async move {
            if i == count {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; chunk]))), i + 1))
        });
        http_body_util::StreamBody::new(Box::pin(s))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_cut_after_the_idle_time() {
        let b = GuardedBody::new(trickle(10, Duration::from_secs(61), 1), Duration::from_secs(60), 0);
        let Err(e) = b.collect().await else { panic!("not cut off") };
        assert!(e.to_string().contains("sent nothing"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_minimum_rate_is_cut() {
        // One byte a second: never idle, far too slow.
        let b = GuardedBody::new(trickle(1, Duration::from_secs(1), 600), Duration::from_secs(60), 1024);
        let Err(e) = b.collect().await else { panic!("not cut off") };
        assert!(e.to_string().contains("below the minimum"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_that_keeps_moving_is_not_cut() {
        // 4 KiB every 2 s (2 KiB/s) for ten minutes, with pauses shorter than the idle time.
        let b = GuardedBody::new(trickle(4096, Duration::from_secs(2), 300), Duration::from_secs(60), 1024);
        let got = b.collect().await.expect("whole body").to_bytes();
        assert_eq!(got.len(), 4096 * 300);
    }
}
