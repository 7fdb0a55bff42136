//! The poller's public HTTP side, for the mini program itself: the same watch
//! as `WatchOrder`, fed by the same hub (no extra Redis subscription or database
//! read per watcher), over the two things a mini program or a web page can open:
//!
//! - `GET /v1/orders/{out_trade_no}/ws?token=…`: a WebSocket (`wx.connectSocket`),
//!   one JSON text message per event, the snapshot first, pinged every 20 s so
//!   WeChat's proxies keep it open, closed with a normal close frame after a
//!   terminal status or at the deadline;
//! - `GET /v1/orders/{out_trade_no}/events?token=…`: the same as Server-Sent Events.
//!
//! The credential is the order's watch token (`wxpay_core::watch_token`), checked
//! before any upgrade or subscription: a bad, expired or other order's token is a
//! 401 and costs nothing else. One token holds at most [`STREAMS_PER_TOKEN`]
//! streams at once (more: 429, also before any upgrade or subscription), so a
//! leaked token cannot take the poller's global cap, which is the gRPC side's
//! (one `WatchService`). A client sends nothing the watch needs: a WebSocket
//! message over [`MAX_CLIENT_MESSAGE`] closes the socket with 1009 before it is
//! buffered.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        Path, Query, State,
    },
    http::{header, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Router,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite;
use wxpay_core::{convert, watch_token::WatchSecret};
use wxpay_proto::v1::OrderStatusEvent;

use crate::{
    error::WatchError,
    service::{WatchService, WatchStream},
};

/// WebSocket pings: well inside the idle timeouts of WeChat's and most proxies.
const PING_EVERY: Duration = Duration::from_secs(20);

/// Open streams one watch token may hold at once: a page reloaded a few times
/// over, not a fleet.
pub const STREAMS_PER_TOKEN: usize = 4;

/// The largest WebSocket message (and frame) taken from a client: the watch
/// reads nothing from it, so anything bigger is refused unread (1009).
pub const MAX_CLIENT_MESSAGE: usize = 1024;

/// WebSocket close code "message too big".
const CLOSE_TOO_BIG: u16 = 1009;

#[derive(Clone)]
pub struct HttpWatch {
    service: WatchService,
    secret: WatchSecret,
    per_token: TokenStreams,
    /// `POLLER_SSE_ALLOW_ORIGIN`: the `Access-Control-Allow-Origin` of the SSE endpoint.
    allow_origin: Option<HeaderValue>,
}

impl HttpWatch {
    pub fn new(
        service: WatchService,
        secret: WatchSecret,
        allow_origin: Option<HeaderValue>,
    ) -> Self {
        Self {
            service,
            secret,
            per_token: TokenStreams::new(STREAMS_PER_TOKEN),
            allow_origin,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/orders/{out_trade_no}/ws", get(websocket))
            .route("/v1/orders/{out_trade_no}/events", get(server_sent_events))
            .with_state(self)
    }

    /// Checks the token and its share of streams, then opens the watch
    /// (subscription and snapshot). The stream counts against its token
    /// until the returned [`TokenSlot`] drops.
    async fn open(
        &self,
        out_trade_no: &str,
        q: &WatchQuery,
    ) -> Result<(WatchStream, TokenSlot), Response> {
        if let Err(e) = self
            .secret
            .verify(out_trade_no, &q.token, chrono::Utc::now())
        {
            tracing::debug!(out_trade_no, error = %e, "watch token refused");
            return Err((
                StatusCode::UNAUTHORIZED,
                "a valid watch token for this order is required",
            )
                .into_response());
        }
        let Some(slot) = self.per_token.take(&q.token) else {
            tracing::debug!(out_trade_no, "watch token at its stream limit");
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "this watch token has too many open streams",
            )
                .into_response());
        };
        let stream = self
            .service
            .open_stream(out_trade_no, q.timeout_seconds, q.include_refunds)
            .await
            .map_err(refusal)?;
        Ok((stream, slot))
    }
}

/// Open streams per watch token (verified tokens only, so the map holds at
/// most one entry per open stream).
#[derive(Clone)]
struct TokenStreams {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a token; dropping it gives the place back.
struct TokenSlot {
    token: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl TokenStreams {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn take(&self, token: &str) -> Option<TokenSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(token.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(TokenSlot {
            token: token.to_owned(),
            open: self.open.clone(),
        })
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

fn lock(open: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // A panic while counting leaves the counts themselves usable.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Deserialize)]
struct WatchQuery {
    #[serde(default)]
    token: String,
    #[serde(default)]
    timeout_seconds: u32,
    #[serde(default)]
    include_refunds: bool,
}

/// One event as the mini program reads it: the `OrderStatusEvent` fields, the
/// status as its short name (`"SUCCESS"`).
pub fn event_json(e: &OrderStatusEvent) -> String {
    let status = convert::status_from_pb(e.status).map_or("UNSPECIFIED", |s| s.as_str());
    serde_json::json!({
        "out_trade_no": e.out_trade_no,
        "status": status,
        "version": e.version,
        "transaction_id": e.transaction_id,
        "total_fee": e.total_fee,
        "occurred_at": e.occurred_at,
        "source": e.source,
        "terminal": e.terminal,
        "refunded_fee": e.refunded_fee,
    })
    .to_string()
}

fn refusal(e: WatchError) -> Response {
    let status = match &e {
        WatchError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        WatchError::NotFound => StatusCode::NOT_FOUND,
        WatchError::TooManyStreams(_) | WatchError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        WatchError::Internal(detail) => {
            tracing::error!(%detail, "watch failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (status, e.to_string()).into_response()
}

async fn server_sent_events(
    State(state): State<HttpWatch>,
    Path(out_trade_no): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Response {
    let (stream, slot) = match state.open(&out_trade_no, &q).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    // The closure owns the slot, so the token's count drops with the stream.
    let events = stream.map(move |item| {
        let _open = &slot;
        Ok::<_, Infallible>(match item {
            Ok(event) => Event::default().data(event_json(&event)),
            // Shutdown or a failed stream: said, then the stream ends.
            Err(status) => Event::default().event("error").data(status.message()),
        })
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    if let Some(origin) = &state.allow_origin {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    response
}

async fn websocket(
    State(state): State<HttpWatch>,
    Path(out_trade_no): Path<String>,
    Query(q): Query<WatchQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Refused before the upgrade: a plain HTTP answer the client can read.
    let (stream, slot) = match state.open(&out_trade_no, &q).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| pump(socket, stream, slot))
}

/// Forwards the watch to the socket until it ends, the client goes, or
/// shutdown; the token's slot is held until then.
async fn pump(mut socket: WebSocket, mut stream: WatchStream, _slot: TokenSlot) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            item = stream.next() => {
                let (code, reason) = match item {
                    Some(Ok(event)) => {
                        if socket.send(Message::Text(event_json(&event).into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // 1001 "going away": the poller is shutting down; watch again.
                    Some(Err(status)) => (1001, status.message().to_owned()),
                    // The terminal status was sent, or the deadline came: a normal close.
                    None => (1000, "done".to_owned()),
                };
                let frame = CloseFrame { code, reason: reason.into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // The client closed or vanished: its watch ends with it.
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(e)) => {
                    if is_too_big(e) {
                        let frame = CloseFrame {
                            code: CLOSE_TOO_BIG,
                            reason: "message too big".into(),
                        };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Whether a receive failed on the size limit (tungstenite refuses the frame
/// from its header, before reading its payload).
fn is_too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_its_share_of_streams_and_gets_them_back() {
        let streams = TokenStreams::new(2);
        let a1 = streams.take("a").expect("first");
        let _a2 = streams.take("a").expect("second");
        assert!(streams.take("a").is_none(), "third refused");
        let _b = streams.take("b").expect("another token is counted apart");
        drop(a1);
        assert!(streams.take("a").is_some(), "a place came back");
    }

    #[test]
    fn a_token_with_no_open_stream_leaves_no_entry() {
        let streams = TokenStreams::new(4);
        drop(streams.take("a").expect("one"));
        assert!(lock(&streams.open).is_empty());
    }
}
