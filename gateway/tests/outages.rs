//! Dependency outages: Redis down while notifications arrive (replies still
//! SUCCESS after the commit; the relay publishes everything once Redis is back),
//! and the database down (replies FAIL, nothing lost; the next retry succeeds).
//! Each test uses its own redis-server child or TCP proxy, never the shared ones.

mod common;

use std::time::Duration;

use common::*;
use wxpay_core::{domain::OrderStatus, wechat::SignType};
use wxpay_store::testing;

#[tokio::test]
async fn with_redis_down_replies_still_succeed_and_every_event_is_published_once_it_is_back() {
    let port = free_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut redis = start_redis(port, None).await;
    let app = spawn_app_with(Setup {
        redis_url: redis_url.clone(),
        ..Setup::default()
    })
    .await;
    let mut orders = Vec::new();
    for fee in [100, 200, 300] {
        orders.push(app.create_order(fee, SignType::Md5).await);
    }

    redis.kill().await.expect("redis killed");
    for order in &orders {
        let (_, reply) = app
            .notify(signed(
                pay_fields(order, &transaction_id()),
                &key(),
                SignType::Md5,
            ))
            .await;
        assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
        assert_eq!(
            app.order(&order.out_trade_no).await.status,
            OrderStatus::Success
        );
    }
    // Give the direct publish and a relay sweep time to fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for order in &orders {
        assert_eq!(
            app.unpublished_rows(&order.out_trade_no).await,
            1,
            "nothing could be published"
        );
    }

    // Restart on the same port, first behind a password: the gateway's publishes are
    // refused until our subscriber is listening, so none can slip past it.
    let password = "let-the-subscriber-in-first";
    let _redis = start_redis(port, Some(password)).await;
    let authed = format!("redis://:{password}@127.0.0.1:{port}");
    let mut subs = Vec::new();
    for order in &orders {
        subs.push(subscribe(&authed, &order.out_trade_no).await);
    }
    let client = redis::Client::open(authed.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query_async(&mut conn)
        .await
        .expect("password removed");

    for (order, sub) in orders.iter().zip(subs.iter_mut()) {
        let event = sub
            .next(Duration::from_secs(15))
            .await
            .expect("the event arrives once Redis is back");
        assert_eq!(
            (event.out_trade_no.as_str(), event.status.as_str()),
            (order.out_trade_no.as_str(), "SUCCESS")
        );
    }
    for order in &orders {
        let mut unpublished = 1;
        for _ in 0..50 {
            unpublished = app.unpublished_rows(&order.out_trade_no).await;
            if unpublished == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(unpublished, 0, "published_at is set");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_the_database_down_replies_fail_and_the_next_retry_succeeds() {
    let upstream = authority_of(&testing::admin_url());
    let proxy = PgProxy::start(upstream).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        ..Setup::default()
    })
    .await;
    let order = app.create_order(888, SignType::Md5).await;
    let body = signed(pay_fields(&order, &transaction_id()), &key(), SignType::Md5);

    proxy.cut();
    let (status, reply) = app.notify(body.clone()).await;
    assert_eq!(
        (status, return_code(&reply).as_str()),
        (200, "FAIL"),
        "{reply}"
    );
    assert_eq!(app.readyz_settled(503).await.0, 503);
    let unpaid = app.order(&order.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 0);

    proxy.restore();
    let (_, reply) = app.notify(body).await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn duplicates_of_a_recorded_payment_get_success_even_with_the_database_down_and_are_kept() {
    let upstream = authority_of(&testing::admin_url());
    let proxy = PgProxy::start(upstream).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        ..Setup::default()
    })
    .await;
    let order = app.create_order(777, SignType::Md5).await;
    let body = signed(pay_fields(&order, &transaction_id()), &key(), SignType::Md5);
    let (_, reply) = app.notify(body.clone()).await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");

    // The payment is durable and this gateway saw it: WeChat's resends need no database.
    proxy.cut();
    for i in 0..20 {
        let (_, reply) = app.notify(body.clone()).await;
        assert_eq!(return_code(&reply), "SUCCESS", "duplicate {i}: {reply}");
    }
    // A different amount under the same order is still checked against the order,
    // so with the database down it is refused, not waved through by the cache.
    let mut other = pay_fields(&order, &transaction_id());
    other.insert("total_fee".into(), "1".into());
    let (_, reply) = app.notify(signed(other, &key(), SignType::Md5)).await;
    assert_eq!(return_code(&reply), "FAIL", "{reply}");

    proxy.restore();
    let kept = app
        .notifications_eventually(order.out_trade_no.as_str(), 21)
        .await;
    assert_eq!(kept.iter().filter(|v| *v == "applied").count(), 1);
    assert_eq!(
        kept.iter().filter(|v| *v == "duplicate").count(),
        20,
        "{kept:?}"
    );
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    app.stop().await;
}
