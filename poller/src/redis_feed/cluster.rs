//! The feed over a Redis Cluster: sharded pub/sub. Each order's channel lives
//! on the shard that owns its slot, where the publishers' `SPUBLISH` goes, so
//! channels and their traffic spread over the cluster instead of every message
//! crossing every node (what classic pub/sub does in a cluster).
//!
//! One cluster connection per process (it holds one connection per shard node
//! and follows slot moves and failovers). `SSUBSCRIBE` takes channels of one
//! slot only, so each channel is its own command, sent many at a time.
//!
//! A node's connection lost (its `Disconnection` push) means its shard's
//! messages may have been missed: the task subscribes every wanted channel
//! again, retrying until every one is confirmed — that is, until every watched
//! slot has a reachable master again, after a failover the promoted replica —
//! and only then asks the hub to make every watcher re-read its snapshot, so a
//! change published during the outage still reaches it. A slot moved to
//! another shard (resharding) ends its channels' subscriptions with a
//! server-sent `sunsubscribe`: a channel still wanted is subscribed again
//! where its slot now lives, and the watchers re-read.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{stream, StreamExt};
use redis::{
    cluster::ClusterClientBuilder, cluster_async::ClusterConnection, PushInfo, PushKind, Value,
};
use tokio::{
    sync::{mpsc, oneshot, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use wxpay_store::EventSink;

use crate::{backoff::Backoff, hub::FeedSink, metrics as m};

use super::{connection::deliver, subscriptions::Command, RedisFeedConfig};

/// SSUBSCRIBE commands in flight at once when (re)subscribing many channels.
const IN_FLIGHT: usize = 64;

pub(super) struct ClusterTask {
    nodes: Vec<String>,
    config: RedisFeedConfig,
    sink: FeedSink,
    /// Every channel the hub wants. Unlike a single server's connection, the
    /// cluster connection keeps (and itself renews) what it subscribed, so
    /// only what is wanted is tracked here.
    wanted: HashSet<String>,
}

impl ClusterTask {
    pub(super) fn new(nodes: Vec<String>, config: RedisFeedConfig, sink: FeedSink) -> Self {
        Self {
            nodes,
            config,
            sink,
            wanted: HashSet::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let lost = Arc::new(Notify::new());
        let (moved_tx, mut moved) = mpsc::unbounded_channel::<String>();
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        // Connect (retrying), releasing subscribers meanwhile: a resync follows.
        let conn = loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.connect(lost.clone(), moved_tx.clone()) => r,
            };
            match attempt {
                Ok(conn) => break conn,
                Err(e) => {
                    tracing::warn!(error = %e, "redis cluster connection failed; retrying");
                    if !self.pause(&mut backoff, &mut commands, &shutdown).await {
                        return;
                    }
                }
            }
        };
        backoff.reset();
        metrics::gauge!(m::REDIS_CONNECTED).set(1.0);
        // Whatever was asked for while connecting.
        let mut healthy = self.subscribe_all(&conn).await;
        if healthy {
            self.sink.resync();
        }
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.tick().await;
        loop {
            if !healthy {
                // A shard was lost: until every wanted channel is confirmed
                // again, the watchers cannot trust what they have.
                metrics::gauge!(m::REDIS_CONNECTED).set(0.0);
                if !self.pause(&mut backoff, &mut commands, &shutdown).await {
                    return;
                }
                if self.subscribe_all(&conn).await {
                    backoff.reset();
                    healthy = true;
                    metrics::gauge!(m::REDIS_CONNECTED).set(1.0);
                    metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                    tracing::info!(
                        channels = self.wanted.len(),
                        "redis cluster shards reachable again; resubscribed"
                    );
                    self.sink.resync();
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lost.notified() => {
                    tracing::warn!("a redis cluster node's connection was lost");
                    healthy = false;
                }
                Some(channel) = moved.recv() => {
                    // Our own sunsubscribe also confirms with this push; only a
                    // channel still wanted was ended by the server.
                    if self.wanted.contains(&channel) {
                        tracing::info!(channel, "a watched channel's slot moved; subscribing where it lives now");
                        match conn.clone().ssubscribe(&channel).await {
                            Ok(()) => self.sink.resync(),
                            Err(e) => {
                                tracing::warn!(error = %e, "ssubscribe after a slot move failed");
                                healthy = false;
                            }
                        }
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = redis::cmd("PING").query_async::<Value>(&mut conn.clone()).await {
                        tracing::warn!(error = %e, "redis cluster ping failed");
                        healthy = false;
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let mut added = Vec::new();
                    let mut removed = Vec::new();
                    let mut waiting = Vec::new();
                    self.apply(cmd, &mut added, &mut removed, &mut waiting);
                    while let Ok(cmd) = commands.try_recv() {
                        self.apply(cmd, &mut added, &mut removed, &mut waiting);
                        if waiting.len() >= super::subscriptions::CHUNK {
                            break;
                        }
                    }
                    let subscribed = ssubscribe_each(&conn, added).await;
                    // Subscribed, or (on error) a resync follows once the shard is
                    // back: either way the watchers may read their snapshots now.
                    for w in waiting {
                        let _ = w.send(());
                    }
                    for channel in removed {
                        if let Err(e) = conn.clone().sunsubscribe(&channel).await {
                            tracing::debug!(error = %e, channel, "sunsubscribe failed");
                        }
                    }
                    metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(self.wanted.len() as f64);
                    if let Err(e) = subscribed {
                        tracing::warn!(error = %e, "redis cluster ssubscribe failed");
                        healthy = false;
                    }
                }
            }
        }
    }

    /// Records a command. A channel subscribed and unsubscribed in one batch
    /// ends up as its last command says.
    fn apply(
        &mut self,
        cmd: Command,
        added: &mut Vec<String>,
        removed: &mut Vec<String>,
        waiting: &mut Vec<oneshot::Sender<()>>,
    ) {
        match cmd {
            Command::Subscribe(channel, done) => {
                if self.wanted.insert(channel.clone()) {
                    added.push(channel);
                }
                waiting.push(done);
            }
            Command::Unsubscribe(channel) => {
                if self.wanted.remove(&channel) {
                    added.retain(|c| *c != channel);
                    removed.push(channel);
                }
            }
        }
    }

    /// Waits one backoff step while recording commands (their subscribers are
    /// released at once: a resync follows). `false` at shutdown.
    async fn pause(
        &mut self,
        backoff: &mut Backoff,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.apply(cmd, &mut Vec::new(), &mut Vec::new(), &mut Vec::new()),
                    None => return false,
                },
            }
        }
    }

    /// Every wanted channel subscribed (again); `false` if any was not.
    async fn subscribe_all(&self, conn: &ClusterConnection) -> bool {
        let all: Vec<String> = self.wanted.iter().cloned().collect();
        metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(all.len() as f64);
        match ssubscribe_each(conn, all).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "redis cluster resubscribe incomplete; retrying");
                false
            }
        }
    }

    /// A RESP3 cluster connection whose pushes reach the hub (`smessage`) or
    /// report a lost node (`lost`).
    async fn connect(
        &self,
        lost: Arc<Notify>,
        moved: mpsc::UnboundedSender<String>,
    ) -> redis::RedisResult<ClusterConnection> {
        let sink = self.sink.clone();
        let push = move |info: PushInfo| {
            match info.kind {
                PushKind::SMessage | PushKind::Message => deliver(&sink, info.data),
                // notify_one keeps a permit, so a loss before the task waits is not missed.
                PushKind::Disconnection => lost.notify_one(),
                PushKind::SUnsubscribe => {
                    if let Some(Value::BulkString(channel)) = info.data.into_iter().next() {
                        let _ = moved.send(String::from_utf8_lossy(&channel).into_owned());
                    }
                }
                _ => {}
            }
            Ok::<(), redis::aio::SendError>(())
        };
        ClusterClientBuilder::new(self.nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(3))
            .retries(2)
            .push_sender(push)
            .build()?
            .get_async_connection()
            .await
    }
}

/// One SSUBSCRIBE per channel (a command may name channels of one slot only),
/// [`IN_FLIGHT`] at a time; the first error, after trying them all.
async fn ssubscribe_each(
    conn: &ClusterConnection,
    channels: Vec<String>,
) -> redis::RedisResult<()> {
    let results: Vec<redis::RedisResult<()>> = stream::iter(channels)
        .map(|channel| {
            let mut conn = conn.clone();
            async move { conn.ssubscribe(&channel).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}
