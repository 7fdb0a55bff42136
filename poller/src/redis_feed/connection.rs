//! The feed's one task: connect (RESP3, named with `CLIENT SETNAME`), ping
//! while idle, reconnect with backoff when the connection is lost, ask the hub
//! to resync after a reconnect, and hand each `message` push to the hub. What
//! to subscribe is decided by `subscriptions`; this file only says when to
//! sync it with Redis.

use std::{sync::Arc, time::Duration};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::OrderEvent;
use wxpay_store::EventSink;

use crate::{backoff::Backoff, hub::FeedSink, metrics as m};

use super::{
    subscriptions::{Command, Subscriptions, CHUNK},
    RedisFeedConfig,
};

/// The task's state: how to connect, where messages go, and what the hub
/// wants against what Redis has.
pub(super) struct Connection {
    client: redis::Client,
    config: RedisFeedConfig,
    sink: FeedSink,
    subscriptions: Subscriptions,
}

impl Connection {
    pub(super) fn new(client: redis::Client, config: RedisFeedConfig, sink: FeedSink) -> Self {
        Self {
            client,
            config,
            sink,
            subscriptions: Subscriptions::default(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut connected_before = false;
        loop {
            // Disconnected (or not yet connected): try to connect, and release
            // subscribers meanwhile, because a resync will follow the reconnect.
            let lost = Arc::new(Notify::new());
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.connect(lost.clone()) => r,
            };
            let mut conn = match attempt {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "redis pub/sub connection failed; retrying");
                    let until = Instant::now() + backoff.next_delay();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep_until(until) => break,
                            cmd = commands.recv() => match cmd {
                                Some(cmd) => self.subscriptions.apply(cmd, &mut Vec::new()),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            backoff.reset();
            metrics::gauge!(m::REDIS_CONNECTED).set(1.0);
            if connected_before {
                metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                tracing::info!(
                    channels = self.subscriptions.subscribed(),
                    "redis pub/sub reconnected and resubscribed"
                );
                self.sink.resync();
            }
            connected_before = true;

            let mut ping = tokio::time::interval(self.config.ping_interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = lost.notified() => break,
                    _ = ping.tick() => {
                        if let Err(e) = redis::cmd("PING").query_async::<Value>(&mut conn).await {
                            tracing::warn!(error = %e, "redis pub/sub ping failed");
                            break;
                        }
                    }
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        let mut waiting = Vec::new();
                        self.subscriptions.apply(cmd, &mut waiting);
                        // Batch whatever else is queued into the same SUBSCRIBE.
                        while let Ok(cmd) = commands.try_recv() {
                            self.subscriptions.apply(cmd, &mut waiting);
                            if waiting.len() >= CHUNK {
                                break;
                            }
                        }
                        let synced = self.subscriptions.sync(&mut conn).await;
                        // Subscribed, or (on error) a resync follows the reconnect: either
                        // way the waiting watchers may read their snapshots now.
                        for w in waiting {
                            let _ = w.send(());
                        }
                        if let Err(e) = synced {
                            tracing::warn!(error = %e, "redis pub/sub command failed");
                            break;
                        }
                    }
                }
            }
            metrics::gauge!(m::REDIS_CONNECTED).set(0.0);
            self.subscriptions.clear_subscribed();
            metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(0.0);
            drop(conn);
        }
    }

    /// Connects, names the connection and subscribes every wanted channel.
    async fn connect(&mut self, lost: Arc<Notify>) -> redis::RedisResult<MultiplexedConnection> {
        let sink = self.sink.clone();
        let push = move |info: PushInfo| {
            match info.kind {
                PushKind::Message => deliver(&sink, info.data),
                // notify_one stores a permit, so a loss noticed before the task
                // waits on it is not missed.
                PushKind::Disconnection => lost.notify_one(),
                _ => {}
            }
            Ok::<(), redis::aio::SendError>(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_push_sender(push);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.config.client_name)
            .query_async::<()>(&mut conn)
            .await?;
        self.subscriptions.clear_subscribed();
        self.subscriptions.sync(&mut conn).await?;
        Ok(conn)
    }
}

/// A `message` push is `[channel, payload]`; the payload is an `OrderEvent` as JSON.
pub(super) fn deliver(sink: &FeedSink, data: Vec<Value>) {
    let Some(Value::BulkString(payload)) = data.into_iter().nth(1) else {
        tracing::warn!("redis message without a payload");
        return;
    };
    match serde_json::from_slice::<OrderEvent>(&payload) {
        Ok(event) => sink.deliver(event),
        // Someone else's bug; never let it stop the feed.
        Err(e) => tracing::warn!(error = %e, "undecodable order event on the bus"),
    }
}
