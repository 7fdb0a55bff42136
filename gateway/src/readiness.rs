//! Whether the gateway can do its work (the database and the event bus answer),
//! checked in the background every [`REFRESH`] so that `/readyz`, on the public
//! port, reads a flag and never sends a query per request. It owns that flag
//! and its refresher; the probe's HTTP answer is `routes`'.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use wxpay_store::{EventPublisher, Store};

/// How often the dependencies are pinged.
pub const REFRESH: Duration = Duration::from_secs(1);

/// One ping's bound: a hung dependency reads as down, not as a stuck probe.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Ready,
    /// Not checked yet.
    Starting,
    DatabaseDown,
    BusDown,
    BothDown,
    /// Shutdown began: a load balancer should send nothing new.
    Stopping,
}

impl Ready {
    pub fn is_ready(self) -> bool {
        self == Ready::Ready
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ready::Ready => "ready",
            Ready::Starting => "starting",
            Ready::DatabaseDown => "database unavailable",
            Ready::BusDown => "redis unavailable",
            Ready::BothDown => "database and redis unavailable",
            Ready::Stopping => "shutting down",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Ready::Ready,
            2 => Ready::DatabaseDown,
            3 => Ready::BusDown,
            4 => Ready::BothDown,
            5 => Ready::Stopping,
            _ => Ready::Starting,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Ready::Ready => 0,
            Ready::Starting => 1,
            Ready::DatabaseDown => 2,
            Ready::BusDown => 3,
            Ready::BothDown => 4,
            Ready::Stopping => 5,
        }
    }
}

/// The last readiness seen; cheap to clone and to read.
#[derive(Clone)]
pub struct Readiness(Arc<AtomicU8>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(Ready::Starting.as_u8())))
    }
}

impl Readiness {
    pub fn get(&self) -> Ready {
        Ready::from_u8(self.0.load(Ordering::Acquire))
    }

    fn set(&self, ready: Ready) {
        self.0.store(ready.as_u8(), Ordering::Release);
    }

    /// Pings both dependencies once (concurrently) and records the outcome.
    pub async fn refresh(&self, store: &dyn Store, publisher: &dyn EventPublisher) {
        let (db, bus) = tokio::join!(
            tokio::time::timeout(PING_TIMEOUT, store.ping()),
            tokio::time::timeout(PING_TIMEOUT, publisher.ping()),
        );
        let ready = match (matches!(db, Ok(Ok(()))), matches!(bus, Ok(Ok(())))) {
            (true, true) => Ready::Ready,
            (false, true) => Ready::DatabaseDown,
            (true, false) => Ready::BusDown,
            (false, false) => Ready::BothDown,
        };
        // Shutdown is final: a late ping does not make the gateway ready again.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (Ready::from_u8(now) != Ready::Stopping).then_some(ready.as_u8())
            });
    }

    /// Refreshes every [`REFRESH`] until `stop`, then says [`Ready::Stopping`].
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        publisher: Arc<dyn EventPublisher>,
        stop: CancellationToken,
    ) {
        let mut every = tokio::time::interval(REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => self.refresh(store.as_ref(), publisher.as_ref()).await,
            }
        }
        self.set(Ready::Stopping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_written() {
        let r = Readiness::default();
        assert_eq!(r.get(), Ready::Starting);
        for s in [
            Ready::Ready,
            Ready::DatabaseDown,
            Ready::BusDown,
            Ready::BothDown,
            Ready::Stopping,
            Ready::Starting,
        ] {
            r.set(s);
            assert_eq!(r.get(), s);
        }
        assert!(Ready::Ready.is_ready());
        assert!(!Ready::Starting.is_ready());
    }
}
