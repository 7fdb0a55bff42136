//! The accept loop of the public HTTP listeners (the gateway's port and the
//! poller's WebSocket / SSE watch), which `axum::serve` leaves unconfigured:
//!
//! - a deadline for the first request's headers, HTTP/1 (hyper's header-read
//!   timer, which also bounds the wait for each later request's headers) and
//!   HTTP/2 alike (a prior-knowledge connection that only says its preface);
//! - HTTP/2 keep-alive pings, so a dead peer does not hold its connection;
//! - idle connections (none of their requests in flight: HTTP/1 between
//!   requests, HTTP/2 with no open stream; an SSE or WebSocket stream is busy
//!   while open) closed after the idle timeout;
//! - a cap on open connections that never stops the loop while any connection
//!   is idle: at the cap the idlest is closed to make room (with none idle, the
//!   loop waits and the kernel's backlog holds the rest);
//! - a minimum rate for request bodies (see [`BodyRate`]);
//! - graceful shutdown: stop accepting, close idle connections, let requests in
//!   flight finish.
//!
//! It owns the sockets and the connections' lifetimes; what is served (routes,
//! request timeouts, in-flight caps) is the caller's `Router`.

mod body;
mod table;

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

pub use body::{BodyRate, TooSlow};
use body::{Holding, MinRate};
use table::{Conn, Registration, Step, Table};

/// What each connection is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection's first request headers (HTTP/1: every request's) must
    /// arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; past it the idlest is closed to make room.
    pub max_connections: usize,
    /// How fast request bodies must arrive.
    pub body_rate: BodyRate,
    /// HTTP/2 PING every this long; no answer within `keepalive_timeout` closes it.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// An honest client sends its request at once: 5 s for headers, a body at
    /// 1 s plus 32 KiB/s (a 64 KiB body: 3 s), a minute of idleness.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            body_rate: BodyRate {
                grace: Duration::from_secs(1),
                min_rate: 32 * 1024,
            },
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How long a connection asked to close gets before its socket is dropped,
/// when nothing of it is in flight (an HTTP/2 GOAWAY needs a moment).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// At the cap with nothing idle, how often to look again for an idle connection.
const ROOM_RETRY: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, closes idle connections and waits for the rest (the caller
/// bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(&limits);
    let table = Arc::new(Table::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = make_room(&slots, &table) => slot,
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Nagle off: replies and events are small and must not wait for a delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let registration = table.register();
        let service = Tracked {
            router: router.clone(),
            conn: registration.conn.clone(),
            body_rate: limits.body_rate,
        };
        // The slot lives with the socket: an upgraded WebSocket keeps it after
        // hyper hands the socket over.
        let io = TokioIo::new(Slotted {
            stream,
            _slot: slot,
        });
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        connections.spawn(drive(
            connection,
            registration,
            limits.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// A free connection slot, closing the idlest connection when there is none;
/// `None` never happens in practice (the semaphore is never closed).
async fn make_room(slots: &Arc<Semaphore>, table: &Table) -> OwnedSemaphorePermit {
    loop {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return slot;
        }
        if table.evict_idlest() {
            tracing::debug!("connection cap reached: closing the idlest connection");
        }
        // The evicted connection frees its slot within moments; if it turned
        // busy, or none was idle, look again shortly.
        if let Ok(Ok(slot)) = tokio::time::timeout(ROOM_RETRY, slots.clone().acquire_owned()).await
        {
            return slot;
        }
    }
}

/// The two ways to end a connection: hyper's graceful one, from outside the
/// future it is.
trait Closable: Future {
    fn close(self: Pin<&mut Self>);
}

impl Closable for auto::UpgradeableConnection<'static, TokioIo<Slotted>, Tracked, TokioExecutor> {
    fn close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs one connection until it ends, closing it when it has been idle too
/// long, when the table picks it to make room, or at shutdown.
async fn drive<C, T, E>(
    connection: C,
    registration: Registration,
    limits: ConnectionLimits,
    stop: CancellationToken,
) where
    C: Closable<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let conn: &Conn = &registration.conn;
    tokio::pin!(connection);
    let check = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(check);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.evicted(), if !closing => {
                connection.as_mut().close();
                closing = true;
                check.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().close();
                closing = true;
                check.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            () = &mut check => {
                let now = Instant::now();
                if closing {
                    // Requests in flight finish however long that takes (the
                    // caller bounds shutdown); an idle socket goes now.
                    if conn.in_flight() == 0 {
                        return;
                    }
                    check.as_mut().reset(now + CLOSE_GRACE);
                    continue;
                }
                match conn.step(now.into_std(), limits.header_timeout, limits.idle_timeout) {
                    Step::CheckAt(at) => check.as_mut().reset(at.into()),
                    Step::Close(why) => {
                        tracing::debug!(reason = why.as_str(), "closing connection");
                        connection.as_mut().close();
                        closing = true;
                        check.as_mut().reset(now + CLOSE_GRACE);
                    }
                }
            }
        }
    }
}

/// The per-connection service: counts each request in flight until its
/// response body is done, and holds request bodies to the minimum rate.
#[derive(Clone)]
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
    body_rate: BodyRate,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.conn.begin();
        let rate = self.body_rate;
        let request = request.map(|body| Body::new(MinRate::new(body, rate)));
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| Body::new(Holding::new(body, in_flight))))
        })
    }
}

/// A socket that holds its connection slot for as long as it is open.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
