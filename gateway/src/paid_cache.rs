//! A bounded in-memory record of orders this gateway has seen paid, so that a
//! duplicate notification (WeChat resends until it hears SUCCESS, sometimes from
//! two servers at once) is answered without a database read.
//!
//! Only facts that never change once an order is paid are kept: its sign type,
//! amount and transaction_id. A later refund does not change the answer to a
//! duplicate payment notification (SUCCESS, nothing to do), so entries never go
//! stale; a miss simply takes the normal path through the database.

use std::{collections::HashMap, sync::Mutex};

use wxpay_core::{domain::Fee, wechat::SignType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub sign_type: SignType,
    pub total_fee: Fee,
    pub transaction_id: String,
}

pub struct SettledCache {
    entries: Mutex<HashMap<String, Settled>>,
    capacity: usize,
}

impl SettledCache {
    /// Orders are paid once and resent for about a day; 100k entries cover a busy
    /// merchant's day in a few tens of MiB.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, out_trade_no: &str) -> Option<Settled> {
        self.lock().get(out_trade_no).cloned()
    }

    pub fn insert(&self, out_trade_no: &str, settled: Settled) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(out_trade_no) {
            // Crude but bounded: forgetting costs only a database read on the next duplicate.
            entries.clear();
        }
        entries.insert(out_trade_no.to_owned(), settled);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Settled>> {
        // A panic while holding this lock cannot leave the map inconsistent (each
        // operation is a single insert/get/clear), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(txn: &str) -> Settled {
        Settled {
            sign_type: SignType::Md5,
            total_fee: Fee::new(100).expect("fee"),
            transaction_id: txn.into(),
        }
    }

    #[test]
    fn remembers_paid_orders_and_stays_bounded() {
        let cache = SettledCache::new(2);
        cache.insert("A", settled("1"));
        cache.insert("B", settled("2"));
        assert_eq!(cache.get("A"), Some(settled("1")));
        cache.insert("C", settled("3"));
        assert!(cache.lock().len() <= 2);
        assert_eq!(cache.get("C"), Some(settled("3")));
        assert_eq!(cache.get("Z"), None);
    }
}
