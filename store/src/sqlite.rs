//! The SQLite implementation of [`Store`], for the single-process embedded mode
//! (`cargo run` with no Postgres: one database file under `./data`, in WAL mode).
//!
//! It owns its two connection pools, its migrations (`migrations/sqlite/`, the
//! same schema as the Postgres one in SQLite types) and the translation between
//! SQLite rows and domain types. It must behave exactly like [`super::PgStore`]:
//! both pass `store::suite`.
//!
//! Writes are serialized in-process. SQLite has one writer per database; rather
//! than let pooled connections race for the write lock (losers sleep-poll in
//! `busy_timeout`, and a deferred transaction that upgrades from reading to
//! writing can fail with `SQLITE_BUSY` without waiting at all), every write goes
//! through a pool of exactly one connection, and every write transaction starts
//! with `BEGIN IMMEDIATE`, so it holds the write lock from its first statement.
//! Concurrent duplicate status changes therefore run one after the other, and the
//! later ones find the status already moved and change nothing. A pool rather
//! than a `Mutex<SqliteConnection>` because the pool queues waiters with a
//! timeout (an overloaded store reports `Unavailable` instead of hanging),
//! replaces a broken connection, and sqlx rolls back a transaction whose future
//! was dropped before the connection is handed out again.
//! Reads use a second pool: WAL lets them run alongside the writer, and each
//! sees the last committed state.
//!
//! Timestamps are stored as INTEGER unix milliseconds (see the migration for why),
//! read from the process clock once per transaction, as Postgres's `now()` is.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
    Executor, Row, Sqlite, Transaction,
};

use crate::{
    columns::{corrupt, OrderColumns},
    Anomaly, InsertOutcome, NotificationRecord, OutboxBacklog, Store, StoreError, Transition,
    TransitionOutcome,
};
use wxpay_core::domain::{EventSource, IdempotencyKey, NewOrder, Order, OrderEvent, OutTradeNo};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for a lock held by another connection (a reader
/// checkpointing, or an outside tool such as the `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for its turn on a pool before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Readers never block each other or the writer under WAL; a few suffice on a small machine.
const MAX_READERS: u32 = 4;

/// `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY`, the extended
/// result codes sqlx reports as the error's code: Postgres's `23505`.
const UNIQUE_VIOLATION_CODES: [&str; 2] = ["2067", "1555"];

const ORDER_COLUMNS: &str = "out_trade_no, idempotency_key, status, version, openid, description, \
     total_fee, attach, client_ip, sign_type, expires_at, prepay_id, prepay_expires_at, \
     transaction_id, cash_fee, created_at, updated_at, paid_at";

const EVENT_COLUMNS: &str =
    "id, out_trade_no, status, version, transaction_id, total_fee, source, occurred_at";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: the in-process write lock (see the module docs).
    writer: SqlitePool,
    /// `query_only` connections for everything that does not write.
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if missing) the database file
    /// at `path` and applies the embedded migrations.
    ///
    /// One process at a time: the write serialization lives in this process.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Once, at start-up, before any connection exists: blocking here is harmless.
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            // NORMAL is durable in WAL mode except for the last commits before a
            // power loss (never corrupting); FULL would fsync on every commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        // WAL is a property of the file, set once by the writer, which connects
        // first; readers inherit it without needing the write lock to set it.
        let writer = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        Self::connect(writer, base).await
    }

    /// A fresh, empty, migrated database that lives in memory until the store
    /// (every clone of it) is dropped. Each call gets its own database, so tests
    /// never see each other's rows.
    pub async fn in_memory() -> Result<Self, StoreError> {
        // A shared-cache in-memory database is named; a unique name per store gives
        // isolation while letting the writer and the readers see the same data.
        let name = format!("file:wxpay-store-{}", ulid::Ulid::new());
        let base = SqliteConnectOptions::new()
            .filename(name)
            .in_memory(true)
            .shared_cache(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        Self::connect(base.clone(), base).await
    }

    async fn connect(
        writer: SqliteConnectOptions,
        reader: SqliteConnectOptions,
    ) -> Result<Self, StoreError> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer connection is kept for the store's whole life: an
            // in-memory database disappears when its last connection closes, and
            // reopening a file connection buys nothing.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(writer)
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A write sent to the wrong pool fails loudly instead of bypassing the
            // writer's serialization.
            .connect_with(reader.pragma("query_only", "ON"))
            .await
            .map_err(map_err)?;
        Ok(Self { writer, reader })
    }

    /// Closes both pools, waiting for the connections in use. The writer closes
    /// last, so its close checkpoints the WAL back into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A write transaction holding the database's write lock (`BEGIN IMMEDIATE`).
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| UNIQUE_VIOLATION_CODES.contains(&code.as_ref())) =>
        {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| corrupt(format!("timestamp {ms} out of range")))
}

/// A JSON array for `IN (SELECT value FROM json_each(?))`: SQLite has no array
/// parameters, and this keeps each statement's text fixed whatever the list's length.
fn json_array<T: Into<serde_json::Value>>(items: Vec<T>) -> String {
    serde_json::Value::from(items).to_string()
}

fn order_from_row(row: &SqliteRow) -> Result<Order, StoreError> {
    let get = |name: &str| row.try_get(name).map_err(map_err);
    let time = |name: &str| from_millis(row.try_get(name).map_err(map_err)?);
    let opt_time = |name: &str| {
        row.try_get::<Option<i64>, _>(name)
            .map_err(map_err)?
            .map(from_millis)
            .transpose()
    };
    OrderColumns {
        out_trade_no: get("out_trade_no")?,
        idempotency_key: get("idempotency_key")?,
        status: get("status")?,
        version: row.try_get("version").map_err(map_err)?,
        openid: get("openid")?,
        description: get("description")?,
        total_fee: row.try_get("total_fee").map_err(map_err)?,
        attach: get("attach")?,
        client_ip: get("client_ip")?,
        sign_type: get("sign_type")?,
        expires_at: opt_time("expires_at")?,
        prepay_id: row.try_get("prepay_id").map_err(map_err)?,
        prepay_expires_at: opt_time("prepay_expires_at")?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        cash_fee: row.try_get("cash_fee").map_err(map_err)?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        paid_at: opt_time("paid_at")?,
    }
    .into_order()
}

fn event_from_row(row: &SqliteRow) -> Result<OrderEvent, StoreError> {
    let source: String = row.try_get("source").map_err(map_err)?;
    let occurred_at: i64 = row.try_get("occurred_at").map_err(map_err)?;
    Ok(OrderEvent {
        id: row.try_get("id").map_err(map_err)?,
        out_trade_no: row.try_get("out_trade_no").map_err(map_err)?,
        status: row.try_get("status").map_err(map_err)?,
        version: row.try_get("version").map_err(map_err)?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        total_fee: row.try_get("total_fee").map_err(map_err)?,
        // Validated like Postgres's timestamptz would be, though already in the event's unit.
        occurred_at: from_millis(occurred_at)?.timestamp_millis(),
        source: EventSource::parse(&source)
            .ok_or_else(|| corrupt(format!("event source {source:?}")))?,
    })
}

/// One order by a unique column, on the reader pool or inside a write transaction.
async fn fetch_order<'e, E>(ex: E, column: &str, value: &str) -> Result<Option<Order>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    // `column` is one of two constants chosen below, never caller input.
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = ?1");
    ex.fetch_optional(sqlx::query(&sql).bind(value))
        .await
        .map_err(map_err)?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_order(&self, o: &NewOrder) -> Result<InsertOutcome, StoreError> {
        let now = now_millis();
        let sql = format!(
            "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
             attach, client_ip, sign_type, expires_at, created_at, updated_at) \
             VALUES (?1, ?2, 'NOTPAY', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {ORDER_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(&sql)
            .bind(o.out_trade_no.as_str())
            .bind(o.idempotency_key.as_str())
            .bind(o.openid.as_str())
            .bind(o.description.as_str())
            .bind(o.total_fee.fen())
            .bind(o.attach.as_str())
            .bind(o.client_ip.as_str())
            .bind(o.sign_type.as_str())
            .bind(o.expires_at.map(|t| t.timestamp_millis()))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let outcome = match inserted {
            Some(row) => InsertOutcome::Inserted(order_from_row(&row)?),
            // Read inside the same transaction: the row that holds the key is
            // certainly there (and orders are never deleted anyway).
            None => {
                match fetch_order(&mut *tx, "idempotency_key", o.idempotency_key.as_str()).await? {
                    Some(existing) => InsertOutcome::KeyTaken(existing),
                    None => {
                        return Err(StoreError::Unavailable(
                            "idempotency conflict without a row".into(),
                        ))
                    }
                }
            }
        };
        tx.commit().await.map_err(map_err)?;
        Ok(outcome)
    }

    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        fetch_order(&self.reader, "out_trade_no", out_trade_no.as_str()).await
    }

    async fn order_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError> {
        fetch_order(&self.reader, "idempotency_key", key.as_str()).await
    }

    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        let sql = format!(
            "UPDATE orders SET prepay_id = ?2, prepay_expires_at = ?3, updated_at = ?4 \
             WHERE out_trade_no = ?1 RETURNING {ORDER_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(out_trade_no.as_str())
            .bind(prepay_id)
            .bind(prepay_expires_at.timestamp_millis())
            .bind(now_millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        let order = order_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        Ok(order)
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let allowed = json_array(t.to.allowed_from().iter().map(|s| s.as_str()).collect());
        let now = now_millis();
        let update = format!(
            "UPDATE orders SET status = ?2, version = version + 1, \
                 transaction_id = COALESCE(?3, transaction_id), \
                 cash_fee = COALESCE(?4, cash_fee), \
                 paid_at = CASE WHEN ?2 = 'SUCCESS' THEN COALESCE(?5, ?7) ELSE paid_at END, \
                 updated_at = ?7 \
             WHERE out_trade_no = ?1 AND status IN (SELECT value FROM json_each(?6)) \
             RETURNING {ORDER_COLUMNS}"
        );
        // The status check and the change are one statement inside a transaction
        // that holds the write lock, so no other change can slip between them; the
        // event is written in the same transaction, so both commit or neither does.
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(&update)
            .bind(t.out_trade_no.as_str())
            .bind(t.to.as_str())
            .bind(t.transaction_id.as_deref())
            .bind(t.cash_fee)
            .bind(t.paid_at.map(|p| p.timestamp_millis()))
            .bind(allowed)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            // A transaction_id already used by another order is a unique violation
            // here: Conflict, and the dropped transaction rolls back.
            .map_err(map_err)?;
        let outcome = match updated {
            Some(row) => {
                let order = order_from_row(&row)?;
                let row = sqlx::query(
                    "INSERT INTO order_events \
                         (out_trade_no, status, version, transaction_id, total_fee, source, occurred_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id, occurred_at",
                )
                .bind(order.out_trade_no.as_str())
                .bind(order.status.as_str())
                .bind(order.version)
                .bind(order.transaction_id.as_deref())
                .bind(order.total_fee.fen())
                .bind(t.source.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                let event = OrderEvent {
                    id: row.try_get("id").map_err(map_err)?,
                    out_trade_no: order.out_trade_no.to_string(),
                    status: order.status.as_str().to_owned(),
                    version: order.version,
                    transaction_id: order.transaction_id.clone(),
                    total_fee: order.total_fee.fen(),
                    occurred_at: row.try_get("occurred_at").map_err(map_err)?,
                    source: t.source,
                };
                TransitionOutcome::Applied { order, event }
            }
            // Not allowed from the current status (or no such order): report the
            // state that made the UPDATE match nothing, read under the same lock.
            None => {
                let order = fetch_order(&mut *tx, "out_trade_no", t.out_trade_no.as_str())
                    .await?
                    .ok_or(StoreError::NotFound)?;
                TransitionOutcome::Unchanged { order }
            }
        };
        tx.commit().await.map_err(map_err)?;
        Ok(outcome)
    }

    async fn unpublished_events(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        // SQLite reads a negative LIMIT as "no limit"; Postgres refuses it. Refuse it too.
        if limit < 0 {
            return Err(StoreError::Unavailable(format!(
                "LIMIT must not be negative: {limit}"
            )));
        }
        let older_than_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM order_events \
             WHERE published_at IS NULL AND occurred_at <= ?1 ORDER BY id LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(now_millis().saturating_sub(older_than_ms))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE order_events SET published_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND published_at IS NULL",
        )
        .bind(now_millis())
        .bind(json_array(ids.to_vec()))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, min(occurred_at) AS oldest \
             FROM order_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(map_err)?;
        let now = now_millis();
        Ok(OutboxBacklog {
            count: row.try_get("n").map_err(map_err)?,
            // Clamped like the Postgres query: a clock step back is not a negative age.
            oldest_age: oldest.map(|ms| {
                Duration::from_millis(u64::try_from(now.saturating_sub(ms)).unwrap_or(0))
            }),
        })
    }

    async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO notifications (kind, out_trade_no, verdict, raw_body, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&n.kind)
        .bind(n.out_trade_no.as_deref())
        .bind(&n.verdict)
        .bind(&n.raw_body)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO anomalies (kind, out_trade_no, detail, occurred_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(a.kind.as_str())
        .bind(a.out_trade_no.as_deref())
        .bind(&a.detail)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
