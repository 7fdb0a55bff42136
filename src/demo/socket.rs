//! The demo's mini program side: the WebSocket watch a mini program opens with
//! its order's watch token (`wx.connectSocket` on the poller's
//! `/v1/orders/{no}/ws`), reading the JSON statuses the poller pushes. It only
//! reads; what the statuses mean to the demo is `paying`'s.

use anyhow::{bail, Context};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

pub(super) struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// One pushed status, as the mini program reads it.
pub(super) struct Pushed {
    pub(super) status: String,
    pub(super) version: i64,
}

impl Socket {
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("the poller refused the WebSocket watch")?;
        Ok(Self(socket))
    }

    /// The next status message; pings are answered by tungstenite itself.
    pub(super) async fn next(&mut self, what: &str) -> anyhow::Result<Pushed> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("{what}: not JSON: {text}"))?;
                    return Ok(Pushed {
                        status: event["status"].as_str().unwrap_or_default().to_owned(),
                        version: event["version"].as_i64().unwrap_or_default(),
                    });
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => bail!("{what}: the socket closed: {frame:?}"),
                Some(Ok(other)) => bail!("{what}: unexpected message {other:?}"),
                Some(Err(e)) => bail!("{what}: the socket failed: {e}"),
                None => bail!("{what}: the socket ended"),
            }
        }
    }
}
