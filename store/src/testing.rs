//! Helpers for tests in every crate of the workspace: a fresh, empty Postgres
//! database per test (so tests never interfere), named after nothing shared.
//! The admin URL comes from `TEST_DATABASE_URL`, else the local trust-auth server.

use sqlx::{Connection, Executor, PgConnection};

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis tests use; channels are per order, and order numbers are unique, so
/// tests sharing one server do not see each other's messages.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Creates an empty database `wxpay_test_<random>` and returns its URL.
/// `scripts/test.sh` drops the previous run's test databases before it starts.
pub async fn fresh_database_url() -> anyhow::Result<String> {
    let admin = admin_url();
    let name = format!(
        "wxpay_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut conn = PgConnection::connect(&admin).await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    conn.close().await?;
    Ok(with_database(&admin, &name))
}

/// `postgres://user@host:port/old?opts` → `postgres://user@host:port/NAME?opts`.
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = main.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match main[authority_start..].find('/') {
        Some(i) => &main[..authority_start + i],
        None => main,
    };
    format!("{base}/{name}{query}")
}

/// A migrated Postgres store on a fresh database.
pub async fn fresh_pg_store() -> anyhow::Result<crate::PgStore> {
    let url = fresh_database_url().await?;
    Ok(crate::PgStore::connect(&url, Default::default()).await?)
}
