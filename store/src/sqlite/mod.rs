//! The SQLite implementation of [`Store`], for the single-process embedded mode
//! (`cargo run` with no Postgres: one database file under `./data`, in WAL mode).
//!
//! It owns its two connection pools, its migrations (`migrations/sqlite/`, the
//! same schema as the Postgres one in SQLite types) and the translation between
//! SQLite rows and domain types. It must behave exactly like [`crate::PgStore`]:
//! both pass `wxpay_store::suite`.
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

use sqlx::{
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
    Sqlite, Transaction,
};

use crate::StoreError;

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
     transaction_id, cash_fee, created_at, updated_at, paid_at, refunded_fee, merchant, trade_type, \
     sub_openid, product_id, scene_info, pay_url";

const EVENT_COLUMNS: &str =
    "id, out_trade_no, status, version, transaction_id, total_fee, source, occurred_at, refunded_fee";

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
            // FULL: every commit is fsynced before it is acknowledged. NORMAL
            // could lose the last commits to a power cut, and a commit here is
            // what the gateway tells WeChat is durable (SUCCESS stops its retries).
            .synchronous(SqliteSynchronous::Full)
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

mod bills;
mod certificates;
mod console;
mod lifecycle;
mod queries;
mod refunds;
mod rows;

use rows::map_err;
