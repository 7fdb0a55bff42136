//! The feed's subscription bookkeeping: the [`Command`]s the handle queues,
//! the channels the hub wants against the channels Redis has, and the one
//! operation that makes the second equal to the first. It never connects,
//! reconnects or reads a message: that is `connection`'s, which calls
//! [`Subscriptions::sync`] whenever the connection is up and something changed.

use std::collections::{HashMap, HashSet};

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

/// What the hub wants and what Redis has, per channel, and which channels
/// changed since the last sync. A sync looks only at those: comparing the two
/// whole sets cost O(watched orders) per batch of subscribes, which made opening
/// the 100,000th stream 50% slower than the first.
#[derive(Default)]
pub(super) struct Subscriptions {
    channels: HashMap<String, Have>,
    /// Channels whose `wanted` and `subscribed` may differ.
    dirty: HashSet<String>,
    subscribed: usize,
}

/// One channel's two facts. A channel with neither is forgotten.
#[derive(Default, Clone, Copy)]
struct Have {
    wanted: bool,
    subscribed: bool,
}

impl Subscriptions {
    /// Records what the hub wants. While disconnected `waiting` is thrown away,
    /// which releases the subscriber at once.
    pub(super) fn apply(&mut self, cmd: Command, waiting: &mut Vec<oneshot::Sender<()>>) {
        let (channel, wanted) = match cmd {
            Command::Subscribe(channel, done) => {
                waiting.push(done);
                (channel, true)
            }
            Command::Unsubscribe(channel) => (channel, false),
        };
        if let Some(have) = self.channels.get_mut(&channel) {
            have.wanted = wanted;
        } else if wanted {
            self.channels.insert(
                channel.clone(),
                Have {
                    wanted,
                    subscribed: false,
                },
            );
        } else {
            // Neither wanted nor subscribed: nothing to do.
            return;
        }
        self.dirty.insert(channel);
    }

    /// Makes Redis's subscriptions equal to what is wanted. On an error, what
    /// was not confirmed stays dirty for the next sync (after the reconnect).
    pub(super) async fn sync(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for channel in self.dirty.drain() {
            match self.channels.get(&channel) {
                Some(h) if h.wanted && !h.subscribed => add.push(channel),
                Some(h) if !h.wanted && h.subscribed => remove.push(channel),
                Some(h) if !h.wanted => {
                    self.channels.remove(&channel);
                }
                _ => {}
            }
        }
        let result = self.send(conn, &add, &remove).await;
        metrics::gauge!(m::SUBSCRIBED_CHANNELS).set(self.subscribed as f64);
        result
    }

    async fn send(
        &mut self,
        conn: &mut MultiplexedConnection,
        add: &[String],
        remove: &[String],
    ) -> redis::RedisResult<()> {
        for (i, chunk) in add.chunks(CHUNK).enumerate() {
            if let Err(e) = conn.subscribe(chunk).await {
                self.dirty.extend(add[i * CHUNK..].iter().cloned());
                self.dirty.extend(remove.iter().cloned());
                return Err(e);
            }
            for c in chunk {
                self.mark(c, true);
            }
        }
        for (i, chunk) in remove.chunks(CHUNK).enumerate() {
            if let Err(e) = conn.unsubscribe(chunk).await {
                self.dirty.extend(remove[i * CHUNK..].iter().cloned());
                return Err(e);
            }
            for c in chunk {
                self.mark(c, false);
            }
        }
        Ok(())
    }

    /// Records Redis's answer for `channel`; a channel that is then neither
    /// wanted nor subscribed is forgotten. (Nothing can change what is wanted
    /// meanwhile: `apply` needs `&mut self`, which the sync holds.)
    fn mark(&mut self, channel: &str, subscribed: bool) {
        let Some(have) = self.channels.get_mut(channel) else {
            return;
        };
        if have.subscribed != subscribed {
            have.subscribed = subscribed;
            if subscribed {
                self.subscribed += 1;
            } else {
                self.subscribed -= 1;
            }
        }
        if !have.wanted && !have.subscribed {
            self.channels.remove(channel);
        }
    }

    /// How many channels Redis has.
    pub(super) fn subscribed(&self) -> usize {
        self.subscribed
    }

    /// Forgets what Redis had: a new connection starts with no subscriptions,
    /// and a lost one took its subscriptions with it. Every wanted channel is
    /// then dirty.
    pub(super) fn clear_subscribed(&mut self) {
        self.channels.retain(|_, h| {
            h.subscribed = false;
            h.wanted
        });
        self.subscribed = 0;
        self.dirty = self.channels.keys().cloned().collect();
    }
}
