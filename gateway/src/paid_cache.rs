//! A bounded in-memory record of orders this gateway has seen paid, so that a
//! duplicate notification (WeChat resends until it hears SUCCESS, sometimes from
//! two servers at once) is answered without a database read.
//!
//! Only facts that never change once an order is paid are kept: its merchant,
//! amount and transaction_id. Not the algorithm the notification was signed
//! with: a copy signed the other way under the same merchant's key is as
//! authentic, and as much a duplicate. The merchant is there because a
//! signature only proves which merchant's key made it: a copy signed by
//! another configured merchant is not a duplicate of this payment, and must
//! take the database path (where it is refused as another merchant's). A later refund does not change the answer to a
//! duplicate payment notification (SUCCESS, nothing to do), so entries never go
//! stale; a miss simply takes the normal path through the database.

use std::{collections::HashMap, sync::Mutex};

use wxpay_core::domain::{Fee, MerchantName, OutTradeNo, TransactionId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The order's merchant (`order.placement.merchant`).
    pub merchant: MerchantName,
    pub total_fee: Fee,
    pub transaction_id: TransactionId,
}

pub struct SettledCache {
    entries: Mutex<HashMap<OutTradeNo, Settled>>,
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

    pub fn get(&self, out_trade_no: &OutTradeNo) -> Option<Settled> {
        self.lock().get(out_trade_no).cloned()
    }

    /// The entry for `out_trade_no` if it was settled for `merchant` (the
    /// configured merchant the message being judged names); any other
    /// merchant's message about it is judged as if nothing were cached.
    pub fn get_for(&self, out_trade_no: &OutTradeNo, merchant: &str) -> Option<Settled> {
        self.get(out_trade_no)
            .filter(|s| s.merchant.as_str() == merchant)
    }

    pub fn insert(&self, out_trade_no: &OutTradeNo, settled: Settled) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(out_trade_no) {
            // Crude but bounded: forgetting costs only a database read on the next duplicate.
            entries.clear();
        }
        entries.insert(out_trade_no.clone(), settled);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OutTradeNo, Settled>> {
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
            merchant: MerchantName::default_merchant(),
            total_fee: Fee::new(100).expect("fee"),
            transaction_id: TransactionId::parse(&format!("42000000{txn}")).expect("id"),
        }
    }

    fn no(s: &str) -> OutTradeNo {
        OutTradeNo::parse(s).expect("out_trade_no")
    }

    #[test]
    fn remembers_paid_orders_and_stays_bounded() {
        let cache = SettledCache::new(2);
        cache.insert(&no("A"), settled("1"));
        cache.insert(&no("B"), settled("2"));
        assert_eq!(cache.get(&no("A")), Some(settled("1")));
        cache.insert(&no("C"), settled("3"));
        assert!(cache.lock().len() <= 2);
        assert_eq!(cache.get(&no("C")), Some(settled("3")));
        assert_eq!(cache.get(&no("Z")), None);
    }

    #[test]
    fn an_entry_answers_only_for_its_merchant() {
        let cache = SettledCache::new(4);
        cache.insert(&no("A"), settled("1"));
        assert_eq!(
            cache.get_for(&no("A"), MerchantName::DEFAULT),
            Some(settled("1"))
        );
        assert_eq!(cache.get_for(&no("A"), "tenant-b"), None);
    }
}
