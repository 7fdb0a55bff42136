//! The table of open connections and what each is doing: requests in flight,
//! since when it has been idle, whether it was ever used, and the signal that
//! asks it to close. It decides which connection is idlest (to make room at the
//! cap) and when one has been idle too long; it never touches a socket itself
//! (the connection's own task does, on its signal).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Every open connection, by id.
pub(crate) struct Table {
    /// Times are kept as milliseconds since this instant, so they fit an atomic.
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// One connection's activity, shared by its service (which counts requests)
/// and its task (which closes it).
pub(crate) struct Conn {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the last request in flight finished (or when it was accepted);
    /// meaningful while `in_flight` is 0.
    idle_since_ms: AtomicU64,
    /// Whether a request ever started: until then the header timeout applies.
    used: AtomicBool,
    /// Chosen to make room; never chosen twice.
    evicted: AtomicBool,
    close: Notify,
}

/// What a connection's task should do when it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing yet; check again at this instant.
    CheckAt(Instant),
    /// Close it, for this reason.
    Close(Why),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// No request's headers arrived within the header timeout (an HTTP/2
    /// connection that only said its preface, a socket that says nothing).
    NoRequest,
    /// Idle (no request in flight) for the idle timeout.
    Idle,
}

impl Why {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Why::NoRequest => "no request in time",
            Why::Idle => "idle",
        }
    }
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // A panic while holding this lock leaves the map itself intact.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection accepted now; it leaves the table when the returned
    /// guard drops.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.epoch, Instant::now())),
            used: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.lock().insert(id, conn.clone());
        Registration {
            table: self.clone(),
            id,
            conn,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Asks the connection idle the longest (and not asked before) to close.
    /// `false`: every connection has a request in flight or is closing already.
    pub(crate) fn evict_idlest(&self) -> bool {
        let now = Instant::now();
        let open = self.lock();
        let idlest = open
            .values()
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .filter_map(|c| c.idle_for(now).map(|idle| (idle, c)))
            .max_by_key(|(idle, _)| *idle);
        match idlest {
            Some((_, conn)) => {
                conn.evicted.store(true, Ordering::Release);
                // notify_one keeps the permit if the task is not waiting yet.
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the [`Table`]; dropping it removes the connection.
pub(crate) struct Registration {
    table: Arc<Table>,
    id: u64,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

impl Conn {
    /// A request started; it is in flight until the guard drops (with its
    /// response body, so a stream being sent keeps the connection busy).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.used.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { conn: self.clone() }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// How long it has been idle, `None` while a request is in flight.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight() > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(
            millis_since(self.epoch, now).saturating_sub(since),
        ))
    }

    /// Resolves when the table asks this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.close.notified().await
    }

    /// Whether to close now, or when to look again.
    pub(crate) fn step(
        &self,
        now: Instant,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Step {
        let Some(idle) = self.idle_for(now) else {
            // Busy: nothing can expire before its requests finish and a full
            // idle period passes.
            return Step::CheckAt(now + idle_timeout);
        };
        let mut deadline = idle_timeout;
        if !self.used.load(Ordering::Acquire) {
            if idle >= header_timeout {
                return Step::Close(Why::NoRequest);
            }
            deadline = deadline.min(header_timeout);
        }
        if idle >= idle_timeout {
            return Step::Close(Why::Idle);
        }
        Step::CheckAt(now + (deadline - idle))
    }
}

/// A request in flight on its connection.
pub(crate) struct InFlight {
    conn: Arc<Conn>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so whoever sees the count reach 0 sees when.
        self.conn.idle_since_ms.store(
            millis_since(self.conn.epoch, Instant::now()),
            Ordering::Release,
        );
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn an_unused_connection_must_send_a_request_within_the_header_timeout() {
        let table = Arc::new(Table::new());
        let r = table.register();
        let now = Instant::now();
        assert!(matches!(r.conn.step(now, HEADER, IDLE), Step::CheckAt(_)));
        assert_eq!(
            r.conn.step(now + HEADER, HEADER, IDLE),
            Step::Close(Why::NoRequest)
        );
    }

    #[test]
    fn a_used_connection_is_closed_only_after_the_idle_timeout_since_its_last_response() {
        let table = Arc::new(Table::new());
        let r = table.register();
        let request = r.conn.begin();
        let later = Instant::now() + 2 * IDLE;
        // In flight: never idle, however long the request takes.
        assert!(matches!(r.conn.step(later, HEADER, IDLE), Step::CheckAt(_)));
        drop(request);
        let done = Instant::now();
        assert!(matches!(
            r.conn.step(done + HEADER, HEADER, IDLE),
            Step::CheckAt(_)
        ));
        assert_eq!(
            r.conn
                .step(done + IDLE + Duration::from_millis(5), HEADER, IDLE),
            Step::Close(Why::Idle)
        );
    }

    #[test]
    fn eviction_picks_the_idlest_idle_connection_and_never_a_busy_one() {
        let table = Arc::new(Table::new());
        let oldest_but_busy = table.register();
        let _busy = oldest_but_busy.conn.begin();
        std::thread::sleep(Duration::from_millis(20));
        let idle_longest = table.register();
        std::thread::sleep(Duration::from_millis(20));
        let idle_shortest = table.register();

        assert!(table.evict_idlest());
        assert!(idle_longest.conn.evicted.load(Ordering::Acquire));
        assert!(!idle_shortest.conn.evicted.load(Ordering::Acquire));
        assert!(table.evict_idlest(), "the next idlest");
        assert!(idle_shortest.conn.evicted.load(Ordering::Acquire));
        assert!(!table.evict_idlest(), "only a busy one is left");
        assert!(!oldest_but_busy.conn.evicted.load(Ordering::Acquire));
    }

    #[test]
    fn a_closed_connection_leaves_the_table() {
        let table = Arc::new(Table::new());
        let r = table.register();
        assert_eq!(table.len(), 1);
        drop(r);
        assert_eq!(table.len(), 0);
        assert!(!table.evict_idlest());
    }
}
