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

/// The console's reads and writes (`ConsoleStore`) on Postgres.
mod console {
    use std::sync::Arc;

    use wxpay_store::{testing, PgStore};

    async fn fresh() -> Arc<PgStore> {
        Arc::new(
            testing::fresh_pg_store()
                .await
                .expect("fresh Postgres database"),
        )
    }

    wxpay_store::console_suite!(fresh());
}

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

/// The recoverable writes (a prepay_id, a `published_at` mark, the audit copy
/// of a notification) commit without waiting for their WAL flush, and that
/// setting stays inside their own transaction: the connection goes back to the
/// pool committing durably, as every money-moving statement after it must.
#[tokio::test]
async fn asynchronous_commits_never_leak_into_the_next_statement() {
    use wxpay_core::{
        domain::{EventSource, OrderStatus},
        wechat::SignType,
    };
    use wxpay_store::{NotificationRecord, Transition, TransitionOutcome};

    let url = testing::fresh_database_url().await.expect("db");
    // One connection: whatever a statement leaves on it, the next one gets.
    let store = wxpay_store::PgStore::connect(
        &url,
        wxpay_store::postgres::PgOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .expect("store");
    let sync = |store: &wxpay_store::PgStore| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SHOW synchronous_commit")
                .fetch_one(&pool)
                .await
                .expect("show")
        }
    };
    assert_eq!(sync(&store).await, "on");

    let new = wxpay_store::suite::new_order(100);
    store.insert_order(&new).await.expect("insert");
    let until = chrono::Utc::now() + chrono::Duration::minutes(115);
    let placed = store
        .set_prepay(&new.out_trade_no, "wx-async", None, until)
        .await
        .expect("set_prepay");
    assert_eq!(placed.prepay_id.as_deref(), Some("wx-async"));
    assert_eq!(sync(&store).await, "on", "after set_prepay");

    let outcome = store
        .transition(&Transition {
            out_trade_no: new.out_trade_no.clone(),
            to: OrderStatus::Success,
            transaction_id: Some("4200000000000000000000000042".into()),
            cash_fee: Some(100),
            paid_at: None,
            source: EventSource::Notify,
            guard: None,
        })
        .await
        .expect("transition");
    let TransitionOutcome::Applied { event, .. } = outcome else {
        panic!("not applied");
    };
    store.mark_published(&[event.id]).await.expect("mark");
    assert_eq!(sync(&store).await, "on", "after mark_published");
    assert!(
        store
            .unpublished_events(std::time::Duration::ZERO, 10)
            .await
            .expect("outbox")
            .is_empty(),
        "the mark is stored"
    );

    let row = NotificationRecord {
        kind: "pay".into(),
        out_trade_no: Some(new.out_trade_no.to_string()),
        verdict: "applied".into(),
        raw_body: b"<xml/>".to_vec(),
        sign_type: Some(SignType::HmacSha256),
    };
    store.record_notification(&row).await.expect("keep");
    store
        .record_notifications(&[row.clone(), row])
        .await
        .expect("keep batch");
    assert_eq!(sync(&store).await, "on", "after the audit rows");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(kept, 3);
    let seen: Vec<Option<String>> =
        sqlx::query_scalar("SELECT sign_type FROM notifications ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("read sign types");
    assert_eq!(
        seen,
        vec![Some("HMAC-SHA256".to_owned()); 3],
        "each kept row says which algorithm its signature verified under"
    );
}
