//! The Redis [`EventFeed`]: ONE pub/sub connection per process, shared by every
//! watcher, owned by one task that keeps its subscriptions equal to the set of
//! watched orders.
//!
//! The connection speaks RESP3, so pub/sub messages arrive as push frames on an
//! ordinary multiplexed connection: that lets the same connection be named with
//! `CLIENT SETNAME` (operators and tests find it in `CLIENT LIST`) and pinged in
//! subscribed mode. Messages are handed to the hub straight from the connection's
//! reader (a map lookup and a `watch` update), so nothing queues between Redis and
//! the watchers. When the connection is lost the task reconnects with backoff,
//! resubscribes every channel and asks the hub to make every watcher re-read its
//! snapshot, so a change published during the outage still reaches it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::{
    sync::{mpsc, oneshot, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::OrderEvent;
use wxpay_store::events;

use wxpay_store::{EventFeed, EventSink};

use crate::{backoff::Backoff, hub::FeedSink, metrics as m};

/// How the feed connects.
#[derive(Debug, Clone)]
pub struct RedisFeedConfig {
    pub url: String,
    /// Set with `CLIENT SETNAME` on the connection (no spaces).
    pub client_name: String,
    /// How often the idle connection is pinged, so a dead peer is noticed even
    /// when the TCP connection does not say so.
    pub ping_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl RedisFeedConfig {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: client_name.into(),
            ping_interval: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad Redis URL: {0}")]
pub struct FeedConfigError(String);

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// The handle the hub holds; the connection lives in the task [`RedisFeed::start`] spawns.
pub struct RedisFeed {
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisFeed {
    /// A RESP3 client for `config.url` (pub/sub messages arrive as push frames).
    pub fn client(config: &RedisFeedConfig) -> Result<redis::Client, FeedConfigError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| FeedConfigError(e.to_string()))?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(resp3))
            .map_err(|e| FeedConfigError(e.to_string()))
    }

    /// Spawns the connection task (it connects in the background and keeps trying,
    /// so the poller starts while Redis is down). It stops when `shutdown` is cancelled.
    pub fn start(
        client: redis::Client,
        config: RedisFeedConfig,
        sink: FeedSink,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            Connection {
                client,
                config,
                sink,
                wanted: HashSet::new(),
                subscribed: HashSet::new(),
            }
            .run(rx, shutdown),
        );
        Self { commands }
    }
}

impl EventFeed for RedisFeed {
    fn subscribe(&self, out_trade_no: &str) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel();
        // A send error means the task stopped (shutdown): nothing will arrive, but
        // the watcher still gets its snapshot and then the shutdown status.
        let _ = self
            .commands
            .send(Command::Subscribe(events::channel(out_trade_no), tx));
        async move {
            let _ = rx.await;
        }
        .boxed()
    }

    fn unsubscribe(&self, out_trade_no: &str) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(events::channel(out_trade_no)));
    }
}

/// The task's state: what the hub wants and what Redis has.
struct Connection {
    client: redis::Client,
    config: RedisFeedConfig,
    sink: FeedSink,
    wanted: HashSet<String>,
    subscribed: HashSet<String>,
}

/// Channels per SUBSCRIBE command, so a resubscribe after a reconnect with many
/// watched orders is a few large commands, not one huge one.
const CHUNK: usize = 1000;

impl Connection {
    async fn run(
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
                                Some(cmd) => self.apply(cmd, &mut Vec::new()),
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
                    channels = self.subscribed.len(),
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
                        self.apply(cmd, &mut waiting);
                        // Batch whatever else is queued into the same SUBSCRIBE.
                        while let Ok(cmd) = commands.try_recv() {
                            self.apply(cmd, &mut waiting);
                            if waiting.len() >= CHUNK {
                                break;
                            }
                        }
                        let synced = self.sync(&mut conn).await;
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
            self.subscribed.clear();
            metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(0.0);
            drop(conn);
        }
    }

    /// Records what the hub wants. While disconnected `waiting` is thrown away,
    /// which releases the subscriber at once.
    fn apply(&mut self, cmd: Command, waiting: &mut Vec<oneshot::Sender<()>>) {
        match cmd {
            Command::Subscribe(channel, done) => {
                self.wanted.insert(channel);
                waiting.push(done);
            }
            Command::Unsubscribe(channel) => {
                self.wanted.remove(&channel);
            }
        }
    }

    /// Makes Redis's subscriptions equal to `wanted`.
    async fn sync(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let add: Vec<String> = self.wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<String> = self.subscribed.difference(&self.wanted).cloned().collect();
        for chunk in add.chunks(CHUNK) {
            conn.subscribe(chunk).await?;
            self.subscribed.extend(chunk.iter().cloned());
        }
        for chunk in remove.chunks(CHUNK) {
            conn.unsubscribe(chunk).await?;
            for c in chunk {
                self.subscribed.remove(c);
            }
        }
        metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(self.subscribed.len() as f64);
        Ok(())
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
        self.subscribed.clear();
        self.sync(&mut conn).await?;
        Ok(conn)
    }
}

/// A `message` push is `[channel, payload]`; the payload is an `OrderEvent` as JSON.
fn deliver(sink: &FeedSink, data: Vec<Value>) {
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
