//! The two body wrappers of the accept loop: a request body that must keep a
//! minimum rate ([`MinRate`]: a body that trickles in fails early, so its
//! handler lets go of its in-flight slot long before the request timeout), and
//! a response body that keeps its request counted as in flight until it is
//! sent or dropped ([`Holding`]: an SSE stream is not idle while open).

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::table::InFlight;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How fast a request body must arrive: all of it within `grace` plus its
/// size at `min_rate` (the declared `Content-Length`, or what has arrived so
/// far when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRate {
    pub grace: Duration,
    /// Bytes per second.
    pub min_rate: u64,
}

impl BodyRate {
    fn allowance(&self, bytes: u64) -> Duration {
        let per_byte_ms = bytes.saturating_mul(1000) / self.min_rate.max(1);
        self.grace + Duration::from_millis(per_byte_ms)
    }
}

/// The body arrived slower than its [`BodyRate`].
#[derive(Debug)]
pub struct TooSlow;

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body arrived slower than the minimum rate")
    }
}

impl StdError for TooSlow {}

/// A request body that fails with [`TooSlow`] once its deadline passes.
pub(crate) struct MinRate<B> {
    inner: B,
    rate: BodyRate,
    started: Instant,
    declared: u64,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<B: Body> MinRate<B> {
    pub(crate) fn new(inner: B, rate: BodyRate) -> Self {
        let declared = inner.size_hint().exact().unwrap_or(0);
        let started = Instant::now();
        Self {
            inner,
            rate,
            started,
            declared,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + rate.allowance(declared))),
        }
    }
}

impl<B> Body for MinRate<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    // Without a declared length the allowance grows with what
                    // arrives, which a trickle barely moves.
                    if this.received > this.declared {
                        let deadline = this.started + this.rate.allowance(this.received);
                        this.deadline.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TooSlow)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`InFlight`] until dropped.
pub(crate) struct Holding<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Holding<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
    use std::future::poll_fn;

    use tokio::sync::mpsc;

    use super::*;

    /// A body fed by hand, one chunk at a time.
    struct Fed {
        chunks: mpsc::Receiver<Bytes>,
        length: Option<u64>,
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }

        fn size_hint(&self) -> SizeHint {
            match self.length {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            }
        }
    }

    // Short, so the tests run on real time: 200 ms grace, 10,000 B/s.
    const RATE: BodyRate = BodyRate {
        grace: Duration::from_millis(200),
        min_rate: 10_000,
    };

    async fn next(body: &mut MinRate<Fed>) -> Option<Result<Frame<Bytes>, BoxError>> {
        poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_declared_body_gets_its_grace_plus_its_size_at_the_minimum_rate() {
        let (tx, chunks) = mpsc::channel(8);
        let mut body = MinRate::new(
            Fed {
                chunks,
                length: Some(2000),
            },
            RATE,
        );
        // 200 ms grace + 2000 bytes at 10,000 B/s: 400 ms, however the bytes come.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(Bytes::from_static(b"x")).await.expect("open");
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
        let failed = next(&mut body).await;
        let err = failed.and_then(|r| r.err()).expect("cut at the deadline");
        assert!(err.is::<TooSlow>());
        let took = Instant::now() - body.started;
        assert!(
            took >= Duration::from_millis(399),
            "cut early, after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_trickle_without_a_length_is_cut_soon_after_the_grace() {
        let (tx, chunks) = mpsc::channel(64);
        let mut body = MinRate::new(
            Fed {
                chunks,
                length: None,
            },
            RATE,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        let outcome = loop {
            match next(&mut body).await {
                Some(Ok(_)) => continue,
                other => break other,
            }
        };
        assert!(matches!(outcome, Some(Err(e)) if e.is::<TooSlow>()));
        let took = Instant::now() - body.started;
        // 200 ms and a few bytes' worth: nowhere near what a request timeout allows.
        assert!(took < Duration::from_millis(600), "cut after {took:?}");
    }

    #[tokio::test]
    async fn a_body_sent_at_once_is_untouched() {
        let (tx, chunks) = mpsc::channel(8);
        let mut body = MinRate::new(
            Fed {
                chunks,
                length: Some(3),
            },
            RATE,
        );
        tx.send(Bytes::from_static(b"abc")).await.expect("open");
        drop(tx);
        assert!(matches!(next(&mut body).await, Some(Ok(_))));
        assert!(next(&mut body).await.is_none());
    }
}
