//! A small WatchOrder client, used by `examples/watch_order.rs` and its test:
//! connect, watch one order, hand each status message to a callback, and say
//! how the stream ended.

use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient, OrderStatusEvent, WatchOrderRequest,
};

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The last message had `terminal: true`.
    Terminal(OrderStatusEvent),
    /// The server closed the stream at its deadline; watch again if still interested.
    Deadline,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("invalid API token")]
    Token,
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// Watches `out_trade_no` on the poller at `url` (`http://host:port`), calling
/// `on_event` for every message.
pub async fn watch_order(
    url: &str,
    out_trade_no: &str,
    api_token: Option<&str>,
    timeout_seconds: u32,
    mut on_event: impl FnMut(&OrderStatusEvent),
) -> Result<WatchEnd, ClientError> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?;
    let mut client = OrderStatusServiceClient::new(channel);
    let mut request = tonic::Request::new(WatchOrderRequest {
        out_trade_no: out_trade_no.to_owned(),
        timeout_seconds,
        include_refunds: false,
    });
    if let Some(token) = api_token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Token)?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut stream = client.watch_order(request).await?.into_inner();
    while let Some(event) = stream.message().await? {
        on_event(&event);
        if event.terminal {
            return Ok(WatchEnd::Terminal(event));
        }
    }
    Ok(WatchEnd::Deadline)
}
