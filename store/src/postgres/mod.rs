//! The Postgres implementation of [`Store`]. Status changes are one statement: a
//! conditional `UPDATE … WHERE status = ANY(allowed)` that bumps `version`, chained
//! with the outbox `INSERT` in the same CTE, so the change and its event commit
//! together and concurrent duplicates make exactly one change (the losers
//! re-check the WHERE after the winner commits and match nothing).

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgConnection, PgPool,
};

use crate::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// Pool sizing; the defaults suit one replica on a small machine.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections this process opens at most (`DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// Every statement on every connection is cancelled after this long, so a
    /// lock wait or a runaway query cannot hold a request (or WeChat) forever.
    pub statement_timeout: Duration,
    /// Whether [`PgStore::connect`] waits for a database it cannot reach yet
    /// (a service starting beside its database); `None` fails at once.
    pub wait: Option<StartupWait>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            wait: None,
        }
    }
}

impl PgOptions {
    /// What a service runs with: `max_connections` (`DATABASE_MAX_CONNECTIONS`),
    /// and at start a wait for the database with backoff, for ever or until
    /// `give_up_after` (`DATABASE_CONNECT_TIMEOUT_SECONDS`).
    pub fn for_service(max_connections: u32, give_up_after: Option<Duration>) -> Self {
        Self {
            max_connections,
            wait: Some(StartupWait {
                give_up_after,
                ..StartupWait::default()
            }),
            ..Self::default()
        }
    }
}

/// How a service waits for its database at start: one attempt, then pauses
/// doubling from `first` up to `max` between attempts, each failure logged
/// once with the attempt number and the next pause. Only a database that may
/// come (refused, reset, unreachable, starting up, out of connections) is
/// waited for; a bad URL, a wrong password or a missing database stop at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupWait {
    pub first: Duration,
    pub max: Duration,
    /// `None`: wait for as long as it takes.
    pub give_up_after: Option<Duration>,
}

impl Default for StartupWait {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(10),
            give_up_after: None,
        }
    }
}

/// Waits until one connection to `connect` opens, as `wait` says.
async fn wait_for_database(
    connect: &PgConnectOptions,
    wait: StartupWait,
) -> Result<(), StoreError> {
    let started = tokio::time::Instant::now();
    let mut pause = wait.first;
    let mut attempt: u32 = 1;
    loop {
        let error = match PgConnection::connect_with(connect).await {
            Ok(conn) => {
                let _ = conn.close().await;
                if attempt > 1 {
                    tracing::info!(attempt, "the database is reachable");
                }
                return Ok(());
            }
            Err(e) if may_come(&e) => e,
            Err(e) => return Err(map_err(e)),
        };
        if let Some(limit) = wait.give_up_after {
            if started.elapsed() + pause > limit {
                return Err(StoreError::Unavailable(format!(
                    "the database was not reachable within {} s \
                     (DATABASE_CONNECT_TIMEOUT_SECONDS): {error}",
                    limit.as_secs()
                )));
            }
        }
        tracing::warn!(
            attempt,
            retry_in_ms = pause.as_millis() as u64,
            "waiting for the database: {error}; retrying in {}s",
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(wait.max);
        attempt = attempt.saturating_add(1);
    }
}

/// Whether a failed connection may succeed later without anyone changing the
/// configuration: the server is not there (yet), starting or shutting down,
/// or out of connections (SQLSTATE classes 08, 53 and 57).
fn may_come(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")),
        _ => false,
    }
}

/// A pooled connection unused for this long is pinged before it is handed out.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A one-row FROM item that makes the statement's own (implicit) transaction
/// commit without waiting for its WAL to reach the disk
/// (`synchronous_commit = off`, local to that transaction, so the connection
/// goes back to the pool as it came). Only for writes whose loss in a Postgres
/// crash something else repairs (bench/ANALYSIS.md, "Which writes are
/// durable before the reply"): a prepay_id (unifiedorder with the same
/// out_trade_no returns it again), a `published_at` mark (the relay publishes
/// the event again; watchers drop duplicates by version) and the audit copy of
/// a notification. The order row, the transition and its outbox row, and
/// refunds always commit durably. A crash of the service itself loses nothing:
/// the commit is done in Postgres before the statement returns.
const ASYNC_COMMIT: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit";

const ORDER_COLUMNS: &str = "out_trade_no, idempotency_key, status, version, openid, description, \
     total_fee, attach, client_ip, sign_type, expires_at, prepay_id, prepay_expires_at, \
     transaction_id, cash_fee, created_at, updated_at, paid_at, refunded_fee, merchant, trade_type, \
     sub_openid, product_id, scene_info, pay_url";

impl PgStore {
    /// Connects and applies the embedded migrations. sqlx takes a Postgres advisory
    /// lock around them, so replicas starting together do not race. With
    /// `options.wait`, a database that cannot be reached yet is waited for
    /// (see [`StartupWait`]); a URL that does not parse fails at once either way.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let connect = url.parse::<PgConnectOptions>().map_err(map_err)?.options([(
            "statement_timeout",
            options.statement_timeout.as_millis().to_string(),
        )]);
        if let Some(wait) = options.wait {
            wait_for_database(&connect, wait).await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection it hands out by default: one more
            // round trip per statement, on every hot path. Only a connection
            // idle for a while is checked (one left behind by a database
            // restart is found before use); a busy one proves itself by its
            // last statement, and a failure on it is an error like any other
            // (the caller retries).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool (already migrated), e.g. for benchmarks.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
