//! The storage suite against SQLite, each test on its own database: in memory
//! (what other crates' tests use), and in a WAL file (the embedded mode as it
//! runs, with real file locks between the writer and the readers). Plus what only the file-backed embedded mode promises: the file and its
//! directory are created, data survives a reopen, the file is in WAL mode, and
//! a row that no longer parses is reported as corrupt.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
use wxpay_core::domain::{
    Caller, EventSource, IdempotencyKey, NewOrder, NewRefund, Order, OrderEvent, OrderStatus,
    OutRefundNo, OutTradeNo, Refund,
};
use wxpay_store::{
    suite::new_order, Anomaly, DueOrder, DueRefund, InsertOutcome, NotificationRecord,
    OutboxBacklog, PlatformCertificate, RefundOutcome, RefundPlacement, RefundUpdate, SqliteStore,
    Store, StoreError, Transition, TransitionOutcome,
};

async fn fresh_sqlite() -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::in_memory()
            .await
            .expect("in-memory SQLite store"),
    )
}

wxpay_store::store_suite!(fresh_sqlite());

/// The console's reads and writes (`ConsoleStore`) on SQLite, in memory.
mod console {
    use std::sync::Arc;

    use wxpay_store::SqliteStore;

    async fn fresh() -> Arc<SqliteStore> {
        Arc::new(
            SqliteStore::in_memory()
                .await
                .expect("in-memory SQLite store"),
        )
    }

    wxpay_store::console_suite!(fresh());
}

mod file_backed {
    use super::*;

    /// A file store that deletes its directory when the test drops it.
    struct FileStore {
        store: SqliteStore,
        _dir: TempDir,
    }

    async fn fresh_file_sqlite() -> Arc<dyn Store> {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.0.join("wxpay.db"))
            .await
            .expect("file SQLite store");
        Arc::new(FileStore { store, _dir: dir })
    }

    wxpay_store::store_suite!(fresh_file_sqlite());

    #[async_trait::async_trait]
    impl Store for FileStore {
        async fn insert_order(&self, o: &NewOrder) -> Result<InsertOutcome, StoreError> {
            self.store.insert_order(o).await
        }
        async fn order(&self, no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
            self.store.order(no).await
        }
        async fn order_by_idempotency_key(
            &self,
            caller: &Caller,
            key: &IdempotencyKey,
        ) -> Result<Option<Order>, StoreError> {
            self.store.order_by_idempotency_key(caller, key).await
        }
        async fn set_prepay(
            &self,
            no: &OutTradeNo,
            prepay_id: &str,
            pay_url: Option<&str>,
            until: DateTime<Utc>,
        ) -> Result<Order, StoreError> {
            self.store.set_prepay(no, prepay_id, pay_url, until).await
        }
        async fn insert_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError> {
            self.store.insert_refund(r).await
        }
        async fn refund(&self, no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
            self.store.refund(no).await
        }
        async fn refunds_of(&self, no: &OutTradeNo) -> Result<Vec<Refund>, StoreError> {
            self.store.refunds_of(no).await
        }
        async fn update_refund(&self, u: &RefundUpdate) -> Result<RefundOutcome, StoreError> {
            self.store.update_refund(u).await
        }
        async fn claim_due_refunds(
            &self,
            now: DateTime<Utc>,
            created_before: DateTime<Utc>,
            limit: i64,
            claim_until: DateTime<Utc>,
        ) -> Result<Vec<DueRefund>, StoreError> {
            self.store
                .claim_due_refunds(now, created_before, limit, claim_until)
                .await
        }
        async fn schedule_refund_check(
            &self,
            no: &OutRefundNo,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.store.schedule_refund_check(no, at).await
        }
        async fn orders_paid_between(
            &self,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<Order>, StoreError> {
            self.store.orders_paid_between(from, to).await
        }
        async fn refunds_succeeded_between(
            &self,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<Refund>, StoreError> {
            self.store.refunds_succeeded_between(from, to).await
        }
        async fn bill_report(
            &self,
            day: chrono::NaiveDate,
        ) -> Result<Option<wxpay_core::domain::BillReport>, StoreError> {
            self.store.bill_report(day).await
        }
        async fn save_bill_report(
            &self,
            report: &wxpay_core::domain::BillReport,
        ) -> Result<(), StoreError> {
            self.store.save_bill_report(report).await
        }
        async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
            self.store.transition(t).await
        }
        async fn claim_due(
            &self,
            now: DateTime<Utc>,
            created_before: DateTime<Utc>,
            limit: i64,
            claim_until: DateTime<Utc>,
        ) -> Result<Vec<DueOrder>, StoreError> {
            self.store
                .claim_due(now, created_before, limit, claim_until)
                .await
        }
        async fn schedule_check(
            &self,
            no: &OutTradeNo,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.store.schedule_check(no, at).await
        }
        async fn purge_before(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
            self.store.purge_before(before, limit).await
        }
        async fn try_lease(
            &self,
            name: &str,
            holder: &str,
            ttl: chrono::Duration,
        ) -> Result<bool, StoreError> {
            self.store.try_lease(name, holder, ttl).await
        }
        async fn unpublished_events(
            &self,
            older_than: Duration,
            limit: i64,
        ) -> Result<Vec<OrderEvent>, StoreError> {
            self.store.unpublished_events(older_than, limit).await
        }
        async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
            self.store.mark_published(ids).await
        }
        async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
            self.store.outbox_backlog().await
        }
        async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError> {
            self.store.record_notification(n).await
        }
        async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
            self.store.record_anomaly(a).await
        }
        async fn platform_certificates(
            &self,
            mch_id: &str,
            now: DateTime<Utc>,
        ) -> Result<Vec<PlatformCertificate>, StoreError> {
            self.store.platform_certificates(mch_id, now).await
        }
        async fn save_platform_certificates(
            &self,
            mch_id: &str,
            certs: &[PlatformCertificate],
            now: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.store
                .save_platform_certificates(mch_id, certs, now)
                .await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.store.ping().await
        }
    }
}

/// A directory under the system temp dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("wxpay-sqlite-test-{}", ulid::Ulid::new())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain connection to the file, bypassing the store, to look at what is on disk.
async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("raw connection")
}

fn payment(no: &OutTradeNo) -> Transition {
    Transition {
        out_trade_no: no.clone(),
        to: OrderStatus::Success,
        transaction_id: Some("4200000099".into()),
        cash_fee: Some(101),
        paid_at: Some(Utc::now()),
        source: EventSource::Notify,
        guard: None,
    }
}

#[tokio::test]
async fn a_file_store_keeps_orders_and_unsent_events_across_a_reopen() {
    let dir = TempDir::new();
    // Neither the directory nor the file exists yet: open creates both.
    let path = dir.0.join("data").join("wxpay.db");
    let new = new_order(101);

    let store = SqliteStore::open(&path).await.expect("open");
    let InsertOutcome::Inserted(_) = store.insert_order(&new).await.expect("insert") else {
        panic!("a fresh key was reported taken");
    };
    let TransitionOutcome::Applied {
        order: paid, event, ..
    } = store
        .transition(&payment(&new.out_trade_no))
        .await
        .expect("pay")
    else {
        panic!("the payment was not applied");
    };
    store.close().await;
    drop(store);
    assert!(path.is_file(), "no database file at {}", path.display());

    // WAL is recorded in the file itself, so a connection that asks for nothing reports it.
    let mut conn = raw_connection(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    conn.close().await.expect("close raw connection");

    let store = SqliteStore::open(&path).await.expect("reopen");
    let read = store
        .order(&new.out_trade_no)
        .await
        .expect("read")
        .expect("order survived");
    assert_eq!(read, paid);
    assert_eq!(read.status, OrderStatus::Success);
    let events = store
        .unpublished_events(Duration::ZERO, 100)
        .await
        .expect("events");
    assert_eq!(events, vec![event], "the unsent event survived");
    // The idempotency key is still taken, and the duplicate payment still a no-op.
    assert_eq!(
        store.insert_order(&new).await.expect("insert again"),
        InsertOutcome::KeyTaken(paid.clone())
    );
    assert!(matches!(
        store.transition(&payment(&new.out_trade_no)).await.expect("pay again"),
        TransitionOutcome::Unchanged { order } if order == paid
    ));
    store.close().await;
}

#[tokio::test]
async fn a_row_that_no_longer_parses_is_reported_corrupt() {
    let dir = TempDir::new();
    let path = dir.0.join("wxpay.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let new = new_order(7);
    store.insert_order(&new).await.expect("insert");

    // Something outside the service writes an openid the domain refuses.
    let mut conn = raw_connection(&path).await;
    sqlx::query("UPDATE orders SET openid = 'not an openid!' WHERE out_trade_no = ?1")
        .bind(new.out_trade_no.as_str())
        .execute(&mut conn)
        .await
        .expect("tamper");
    conn.close().await.expect("close raw connection");

    let r = store.order(&new.out_trade_no).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    store.close().await;
}

#[tokio::test]
async fn in_memory_stores_do_not_share_rows() {
    let a = SqliteStore::in_memory().await.expect("store a");
    let b = SqliteStore::in_memory().await.expect("store b");
    let new = new_order(1);
    a.insert_order(&new).await.expect("insert");
    assert!(a.order(&new.out_trade_no).await.expect("read a").is_some());
    assert_eq!(b.order(&new.out_trade_no).await.expect("read b"), None);
}

/// A database written by the release before caller-scoped idempotency keys
/// (migrations 1–4), with an order, its event and a refund in it.
async fn a_database_at_migration_4(path: &Path) {
    let mut migrator = sqlx::migrate::Migrator::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"),
    )
    .await
    .expect("migrations");
    std::fs::create_dir_all(path.parent().expect("a directory")).expect("directory");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 4)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .expect("sqlite file");
    migrator.run(&mut conn).await.expect("migrations 1-4");
    for sql in [
        "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
         client_ip, sign_type, transaction_id, paid_at, refunded_fee, created_at, updated_at) \
         VALUES ('01KB0000000000000000000001', 'cart-42', 'REFUND', 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o', \
         'old order', 100, '127.0.0.1', 'MD5', '4200000001', 1700000000000, 30, 1700000000000, 1700000000000)",
        "INSERT INTO order_events (out_trade_no, status, version, total_fee, source, occurred_at) \
         VALUES ('01KB0000000000000000000001', 'SUCCESS', 2, 100, 'NOTIFY', 1700000000000)",
        "INSERT INTO refunds (out_refund_no, out_trade_no, refund_fee, status, reason, created_at, updated_at) \
         VALUES ('R-1', '01KB0000000000000000000001', 30, 'SUCCESS', '', 1700000000000, 1700000000000)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
    }
    conn.close().await.expect("close");
}

#[tokio::test]
async fn an_older_database_upgrades_to_caller_scoped_keys_keeping_every_row() {
    let dir = TempDir::new();
    let path = dir.0.join("wxpay.db");
    a_database_at_migration_4(&path).await;
    let store = SqliteStore::open(&path)
        .await
        .expect("open runs migration 5");
    let no = OutTradeNo::parse("01KB0000000000000000000001").expect("number");
    let old = store
        .order(&no)
        .await
        .expect("read")
        .expect("the order survived");
    assert_eq!((old.status, old.refunded_fee), (OrderStatus::Refund, 30));
    let key = IdempotencyKey::parse("cart-42").expect("key");
    let by_key = store
        .order_by_idempotency_key(&Caller::default_caller(), &key)
        .await
        .expect("read");
    assert_eq!(
        by_key.map(|o| o.out_trade_no),
        Some(no.clone()),
        "old orders are the default caller's"
    );
    let refund = store
        .refund(&OutRefundNo::parse("R-1").expect("refund number"))
        .await
        .expect("read");
    assert_eq!(
        refund.map(|r| r.refund_fee.fen()),
        Some(30),
        "the refund survived"
    );
    // Another caller may now use the old order's key.
    let mut other = new_order(7);
    other.caller = Caller::parse("billing").expect("caller");
    other.idempotency_key = key;
    assert!(matches!(
        store.insert_order(&other).await.expect("insert"),
        InsertOutcome::Inserted(_)
    ));
    // References still hold: an event for an order that does not exist is refused.
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .foreign_keys(true)
        .connect()
        .await
        .expect("sqlite file");
    let dangling = sqlx::query(
        "INSERT INTO order_events (out_trade_no, status, version, total_fee, source, occurred_at) \
         VALUES ('NOSUCHORDER', 'SUCCESS', 2, 100, 'NOTIFY', 1)",
    )
    .execute(&mut conn)
    .await;
    assert!(
        dangling.is_err(),
        "foreign keys are enforced after the rebuild"
    );
}
