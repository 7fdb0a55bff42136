//! Events from a shared bus are claims, not facts: whoever can publish on the
//! Redis network (compose runs Redis without a password) could otherwise push
//! `SUCCESS` to every watcher of an unpaid order. The [`Confirmer`] turns a
//! claim into what the database holds before any watcher sees it: for each
//! event newer than what the order's cell already holds, it reads the order's
//! row (one read per event per poller, batched with the snapshot reads, never
//! one per watcher) and offers
//!
//! - the event itself when the row is at exactly that version with the same
//!   status, transaction, amount and refunded total (a genuine event: it keeps
//!   its `source` and time);
//! - otherwise the row as a snapshot: a newer row supersedes the event, and a
//!   row older than the event means the event was never committed (genuine
//!   events are published only after their commit), so it is counted and
//!   dropped, and the watcher never sees its status.
//!
//! Reads of one order never overlap: events arriving while its read is out are
//! folded into one follow-up read, so a flood of forged events costs at most
//! one statement in flight per watched order, and stale copies (the relay's
//! republishes, duplicates) cost nothing at all. A read that fails makes the
//! order's watchers re-read their snapshot (the hub's epoch), which they retry
//! until the database answers, so a genuine event is never lost to an outage.
//!
//! It owns only the map of orders with a read out; the order's state is the
//! hub's cell.

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use wxpay_core::domain::{OrderEvent, OutTradeNo};

use crate::{
    metrics as m,
    order_state::{OrderCell, OrderState},
    snapshots::Snapshots,
};

/// Confirms bus events against the database. Cheap to share (`Arc`).
pub struct Confirmer {
    reads: Snapshots,
    /// The newest unconfirmed event of each order whose read is out.
    pending: Mutex<HashMap<OutTradeNo, OrderEvent>>,
}

impl Confirmer {
    pub(crate) fn new(reads: Snapshots) -> Arc<Self> {
        Arc::new(Self {
            reads,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<OutTradeNo, OrderEvent>> {
        // An insert or a remove cannot be left half-done by a panic.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `event`, published for the order of `cell`, and offers the cell
    /// what the database confirms of it. Never blocks: the read runs on a task.
    pub(crate) fn check(self: &Arc<Self>, cell: Arc<OrderCell>, event: OrderEvent) {
        if cell
            .lock()
            .latest()
            .is_some_and(|known| known.version >= event.version)
        {
            // A copy of what the watchers already have (at-least-once delivery):
            // nothing to confirm, nothing to read.
            return;
        }
        match self.lock().entry(event.out_trade_no.clone()) {
            Entry::Occupied(mut waiting) => {
                // A read is out: it looks at the newest event once it returns.
                if event.version > waiting.get().version {
                    waiting.insert(event);
                }
                return;
            }
            Entry::Vacant(slot) => {
                slot.insert(event);
            }
        }
        let this = self.clone();
        tokio::spawn(async move { this.confirm(cell).await });
    }

    /// Reads the order until the newest event that came for it is judged.
    async fn confirm(&self, cell: Arc<OrderCell>) {
        let out_trade_no = cell.out_trade_no().clone();
        loop {
            let asked = match self.lock().get(&out_trade_no) {
                Some(event) => event.version,
                None => return,
            };
            metrics::counter!(m::CONFIRMING_READS).increment(1);
            let read = self.reads.order(&out_trade_no).await;
            let mut pending = self.lock();
            let Some(newest) = pending.get(&out_trade_no).cloned() else {
                return;
            };
            let order = match read {
                Ok(Some(order)) => order,
                Ok(None) => {
                    // No such order: nothing any watcher can be told.
                    pending.remove(&out_trade_no);
                    metrics::counter!(m::EVENTS_UNCONFIRMED).increment(1);
                    tracing::warn!(%out_trade_no, version = newest.version, "an event for an order the database does not have was dropped");
                    return;
                }
                Err(e) => {
                    pending.remove(&out_trade_no);
                    drop(pending);
                    tracing::warn!(%out_trade_no, error = %e, "an event could not be confirmed; the order's watchers re-read their snapshot");
                    cell.update(OrderState::bump_epoch);
                    return;
                }
            };
            let row = OrderEvent::snapshot(&order);
            let verdict = judge(&row, &newest, asked);
            if !matches!(verdict, Judged::ReadAgain(_)) {
                pending.remove(&out_trade_no);
            }
            drop(pending);
            match verdict {
                Judged::Confirmed(event) => {
                    cell.update(|s| s.offer(event));
                    return;
                }
                Judged::Unconfirmed(truth) => {
                    metrics::counter!(m::EVENTS_UNCONFIRMED).increment(1);
                    tracing::warn!(%out_trade_no, claimed = newest.version, status = %newest.status, held = truth.version, "an event the database does not hold was dropped");
                    cell.update(|s| s.offer(truth));
                    return;
                }
                Judged::ReadAgain(truth) => {
                    cell.update(|s| s.offer(truth));
                }
            }
        }
    }
}

/// What a read of the order says about the newest event published for it.
#[derive(Debug, PartialEq)]
enum Judged {
    /// The event, or the newer row that supersedes it: offer it.
    Confirmed(OrderEvent),
    /// The row is older than the event: the event was never committed. The
    /// row (the truth) is offered; it changes nothing unless it is news.
    Unconfirmed(OrderEvent),
    /// A newer event came while the read was out: offer the row, read again.
    ReadAgain(OrderEvent),
}

/// `row` is the order as read (as a snapshot event), `newest` the newest event
/// published for it, `asked` the version the read was started for (a read that
/// began before `newest` arrived may not see it).
fn judge(row: &OrderEvent, newest: &OrderEvent, asked: i64) -> Judged {
    if row.version == newest.version && holds(row, newest) {
        return Judged::Confirmed(newest.clone());
    }
    if row.version >= newest.version {
        // Newer than the event (which it supersedes), or the same version with
        // other fields (a forgery reusing a real version): the row is what holds.
        Judged::Confirmed(row.clone())
    } else if newest.version > asked {
        Judged::ReadAgain(row.clone())
    } else {
        Judged::Unconfirmed(row.clone())
    }
}

/// Whether the row says what the event says (at the same version).
fn holds(row: &OrderEvent, event: &OrderEvent) -> bool {
    row.status == event.status
        && row.transaction_id == event.transaction_id
        && row.total_fee == event.total_fee
        && row.refunded_fee == event.refunded_fee
}

#[cfg(test)]
mod tests {
    use wxpay_core::domain::{EventSource, Fee, OrderStatus};

    use super::*;

    /// The row as the confirmer sees it: a snapshot event.
    fn order(version: i64, status: OrderStatus) -> OrderEvent {
        OrderEvent {
            id: 0,
            source: EventSource::Snapshot,
            occurred_at: 5,
            ..event(version, status)
        }
    }

    fn event(version: i64, status: OrderStatus) -> OrderEvent {
        OrderEvent {
            id: 7,
            out_trade_no: OutTradeNo::parse("C1").expect("valid"),
            status,
            version,
            transaction_id: (status == OrderStatus::Success).then(|| "4200000001".into()),
            total_fee: Fee::new(100).expect("positive"),
            occurred_at: 1,
            source: EventSource::Notify,
            refunded_fee: 0,
        }
    }

    #[test]
    fn a_genuine_event_is_passed_on_as_published() {
        let e = event(2, OrderStatus::Success);
        assert_eq!(
            judge(&order(2, OrderStatus::Success), &e, 2),
            Judged::Confirmed(e)
        );
    }

    #[test]
    fn a_forged_success_for_an_unpaid_order_shows_only_the_row() {
        let unpaid = order(1, OrderStatus::NotPay);
        // A version the row has not reached: never committed.
        let Judged::Unconfirmed(truth) = judge(&unpaid, &event(2, OrderStatus::Success), 2) else {
            panic!("a forged newer version must not be confirmed");
        };
        assert_eq!(truth.status, OrderStatus::NotPay);
        // The row's own version with another status: the row wins.
        let Judged::Confirmed(truth) = judge(&unpaid, &event(1, OrderStatus::Success), 1) else {
            panic!("the row at the same version is the truth");
        };
        assert_eq!(
            (truth.status, truth.source),
            (OrderStatus::NotPay, EventSource::Snapshot)
        );
    }

    #[test]
    fn a_row_that_moved_on_supersedes_the_event() {
        let Judged::Confirmed(truth) = judge(
            &order(3, OrderStatus::Closed),
            &event(2, OrderStatus::Success),
            2,
        ) else {
            panic!("a newer row is confirmed");
        };
        assert_eq!((truth.status, truth.version), (OrderStatus::Closed, 3));
    }

    #[test]
    fn an_event_that_came_during_the_read_is_read_for_again() {
        assert!(matches!(
            judge(
                &order(2, OrderStatus::UserPaying),
                &event(3, OrderStatus::Success),
                2
            ),
            Judged::ReadAgain(_)
        ));
    }
}
