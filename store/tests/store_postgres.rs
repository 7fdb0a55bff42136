//! The storage suite against Postgres, each test on its own fresh database.

use std::sync::Arc;

use wxpay_store::{testing, Store};

async fn fresh() -> Arc<dyn Store> {
    Arc::new(
        testing::fresh_pg_store()
            .await
            .expect("fresh Postgres database"),
    )
}

wxpay_store::store_suite!(fresh());

#[tokio::test]
async fn every_connection_has_a_statement_timeout() {
    let url = testing::fresh_database_url().await.expect("db");
    let store = wxpay_store::PgStore::connect(
        &url,
        wxpay_store::postgres::PgOptions {
            statement_timeout: std::time::Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .expect("store");
    let started = std::time::Instant::now();
    let slept = sqlx::query("SELECT pg_sleep(5)")
        .execute(store.pool())
        .await;
    assert!(slept.is_err(), "a 5 s statement ran to the end");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
