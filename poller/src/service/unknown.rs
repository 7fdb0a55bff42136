//! The cheap refusal of orders that do not exist, before a watch costs a Redis
//! subscription and a database read.
//!
//! A number the database just said is unknown stays refused for a minute, so a
//! client retrying in a loop costs one read, not one a second. Nobody can know
//! a number CreateOrder makes before it has stored it (80 of its bits are
//! random), so remembering a miss never hides a real order. Numbers are not
//! judged by their shape: orders an operator imported or seeded keep whatever
//! numbers they had, and must be watchable.
//!
//! Bounded: at most [`CAPACITY`] misses are kept, the oldest forgotten first.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use wxpay_core::domain::OutTradeNo;

/// How long a miss is remembered.
const TTL: Duration = Duration::from_secs(60);
/// How many misses are remembered at most (about 100 bytes each).
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub(super) struct UnknownOrders {
    misses: Mutex<Misses>,
}

#[derive(Default)]
struct Misses {
    at: HashMap<OutTradeNo, Instant>,
    oldest_first: VecDeque<OutTradeNo>,
}

impl UnknownOrders {
    /// Whether the database said, a moment ago, that no order has `no`.
    pub(super) fn refuses(&self, no: &OutTradeNo) -> bool {
        let Ok(misses) = self.misses.lock() else {
            // A poisoned lock only loses the cache: ask the database.
            return false;
        };
        misses.at.get(no).is_some_and(|at| at.elapsed() < TTL)
    }

    /// The database says no order has `no`.
    pub(super) fn remember(&self, no: OutTradeNo) {
        let Ok(mut misses) = self.misses.lock() else {
            return;
        };
        if misses.at.insert(no.clone(), Instant::now()).is_none() {
            misses.oldest_first.push_back(no);
        }
        while misses.oldest_first.len() > CAPACITY {
            if let Some(old) = misses.oldest_first.pop_front() {
                misses.at.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_remembered_within_their_bound() {
        let unknown = UnknownOrders::default();
        let first = OutTradeNo::generate();
        assert!(!unknown.refuses(&first), "not seen yet");
        unknown.remember(first.clone());
        assert!(unknown.refuses(&first));
        for _ in 0..CAPACITY {
            unknown.remember(OutTradeNo::generate());
        }
        assert!(
            !unknown.refuses(&first),
            "the oldest miss is forgotten first"
        );
        let misses = unknown.misses.lock().expect("lock");
        assert_eq!(misses.at.len(), CAPACITY);
        assert_eq!(misses.oldest_first.len(), CAPACITY);
    }
}
