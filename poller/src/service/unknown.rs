//! The cheap refusal of orders that do not exist, before a watch costs a Redis
//! subscription and a database read.
//!
//! Two checks, both without I/O:
//! - **The number.** Every order this product stores was numbered by
//!   CreateOrder (`OutTradeNo::generate`, a ULID whose first half is the time it
//!   was minted). A number that is no ULID of ours, or one minted further in the
//!   future than any clock drift explains, names no order: a guess, a typo, or
//!   another system's number.
//! - **The recent misses.** A number the database just said is unknown stays
//!   refused for a minute, so a client retrying in a loop costs one read, not one
//!   a second. Nobody can know a number before CreateOrder has stored it (80 of
//!   its bits are random), so remembering a miss never hides a real order.
//!
//! Bounded: at most [`CAPACITY`] misses are kept, the oldest forgotten first.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use wxpay_core::domain::OutTradeNo;

/// How long a miss is remembered.
const TTL: Duration = Duration::from_secs(60);
/// How many misses are remembered at most (about 100 bytes each).
const CAPACITY: usize = 10_000;
/// How far ahead of this clock a number may have been minted by another
/// replica's clock: generous, since refusing a real order is the worse mistake.
const MAX_CLOCK_AHEAD: chrono::Duration = chrono::Duration::minutes(10);

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
    /// Whether `no` certainly names no order.
    pub(super) fn refuses(&self, no: &OutTradeNo) -> bool {
        match no.minted_at() {
            None => return true,
            Some(at) if at > Utc::now() + MAX_CLOCK_AHEAD => return true,
            Some(_) => {}
        }
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
    fn numbers_we_cannot_have_minted_are_refused_and_ours_are_not() {
        let unknown = UnknownOrders::default();
        assert!(!unknown.refuses(&OutTradeNo::generate()));
        for other in ["X1", "ORDER-2026-0001", "01ARZ3NDEKTSV4RRFFQ69G5FA"] {
            assert!(
                unknown.refuses(&OutTradeNo::parse(other).expect("valid")),
                "{other}"
            );
        }
        // Minted a year from now by this clock: no replica's clock is that far off.
        let future = ulid::Ulid::from_parts(
            (Utc::now() + chrono::Duration::days(365)).timestamp_millis() as u64,
            7,
        );
        assert!(unknown.refuses(&OutTradeNo::parse(&future.to_string()).expect("valid")));
    }

    #[test]
    fn misses_are_remembered_within_their_bound() {
        let unknown = UnknownOrders::default();
        let first = OutTradeNo::generate();
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
