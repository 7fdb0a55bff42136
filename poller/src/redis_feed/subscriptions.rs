//! The feed's subscription bookkeeping: the [`Command`]s the handle queues,
//! the channels the hub wants against the channels Redis has, and the one
//! operation that makes the second equal to the first. It never connects,
//! reconnects or reads a message: that is `connection`'s, which calls
//! [`Subscriptions::sync`] whenever the connection is up and something changed.

use std::collections::HashSet;

use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;

use crate::metrics as m;

/// What the handle asks of the task.
pub(super) enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// Channels per SUBSCRIBE command, so a resubscribe after a reconnect with many
/// watched orders is a few large commands, not one huge one.
pub(super) const CHUNK: usize = 1000;

/// What the hub wants and what Redis has.
#[derive(Default)]
pub(super) struct Subscriptions {
    wanted: HashSet<String>,
    subscribed: HashSet<String>,
}

impl Subscriptions {
    /// Records what the hub wants. While disconnected `waiting` is thrown away,
    /// which releases the subscriber at once.
    pub(super) fn apply(&mut self, cmd: Command, waiting: &mut Vec<oneshot::Sender<()>>) {
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
    pub(super) async fn sync(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
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

    /// How many channels Redis has.
    pub(super) fn subscribed(&self) -> usize {
        self.subscribed.len()
    }

    /// Forgets what Redis had: a new connection starts with no subscriptions,
    /// and a lost one took its subscriptions with it.
    pub(super) fn clear_subscribed(&mut self) {
        self.subscribed.clear();
    }
}
