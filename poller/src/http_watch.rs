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
//! 401 and costs nothing else. The stream caps are the gRPC side's (one
//! `WatchService`).

use std::{convert::Infallible, time::Duration};

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
use wxpay_core::{convert, watch_token::WatchSecret};
use wxpay_proto::v1::OrderStatusEvent;

use crate::{
    error::WatchError,
    service::{WatchService, WatchStream},
};

/// WebSocket pings: well inside the idle timeouts of WeChat's and most proxies.
const PING_EVERY: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct HttpWatch {
    service: WatchService,
    secret: WatchSecret,
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
            allow_origin,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/orders/{out_trade_no}/ws", get(websocket))
            .route("/v1/orders/{out_trade_no}/events", get(server_sent_events))
            .with_state(self)
    }

    /// Checks the token, then opens the watch (subscription and snapshot).
    async fn open(&self, out_trade_no: &str, q: &WatchQuery) -> Result<WatchStream, Response> {
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
        self.service
            .open_stream(out_trade_no, q.timeout_seconds, q.include_refunds)
            .await
            .map_err(refusal)
    }
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
    let stream = match state.open(&out_trade_no, &q).await {
        Ok(stream) => stream,
        Err(refused) => return refused,
    };
    let events = stream.map(|item| {
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
    let stream = match state.open(&out_trade_no, &q).await {
        Ok(stream) => stream,
        Err(refused) => return refused,
    };
    upgrade.on_upgrade(move |socket| pump(socket, stream))
}

/// Forwards the watch to the socket until it ends, the client goes, or shutdown.
async fn pump(mut socket: WebSocket, mut stream: WatchStream) {
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
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
