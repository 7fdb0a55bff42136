//! Scale, outages, lost notifications and stuck clients, on real Postgres and Redis.

mod common;

use std::{sync::Arc, time::Duration};

use common::{next, spawn_app, Options, RedisServer};
use futures::{stream, StreamExt};
use poller::order_state::RETAINED_EVENTS;
use wxpay_core::domain::{EventSource, Fee, OrderEvent, OutTradeNo};
use wxpay_proto::v1::{OrderStatus, OrderStatusEvent};
use wxpay_store::events::EventPublisher;

/// Reads a stream to its end.
async fn drain(mut s: tonic::Streaming<OrderStatusEvent>) -> Vec<OrderStatusEvent> {
    let mut all = Vec::new();
    while let Some(e) = next(&mut s).await {
        all.push(e);
    }
    all
}

/// `n` new orders, each watched by one stream that has read its snapshot.
async fn watched(
    app: &common::TestApp,
    n: usize,
) -> (Vec<OutTradeNo>, Vec<tonic::Streaming<OrderStatusEvent>>) {
    let mut orders = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..n {
        let no = app.create_order().await;
        let mut s = app.watch(no.as_str()).await.expect("watch");
        next(&mut s).await.expect("snapshot");
        orders.push(no);
        streams.push(s);
    }
    (orders, streams)
}

/// Polls `f` until it returns true or 10 s pass.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_watchers_each_get_exactly_their_success_over_one_redis_connection() {
    const N: usize = 1000;
    let app = Arc::new(spawn_app(Options::default()).await);
    let orders: Vec<_> = stream::iter(0..N)
        .map(|_| app.create_order())
        .buffer_unordered(32)
        .collect()
        .await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(app.client().await);
    }

    // Every watcher has its NOTPAY snapshot before anything is paid.
    let opened: Vec<_> = stream::iter(orders.iter().enumerate())
        .map(|(i, no)| {
            let mut client = clients[i % clients.len()].clone();
            async move {
                let mut s = common::watch_with(&mut client, no.as_str(), 0)
                    .await
                    .expect("watch");
                let first = next(&mut s).await.expect("snapshot");
                // Its own order's row, though the reads were batched with others'.
                assert_eq!(first.out_trade_no, no.as_str());
                assert_eq!((first.status(), first.version), (OrderStatus::Notpay, 1));
                s
            }
        })
        .buffered(200)
        .collect()
        .await;
    let readers: Vec<_> = opened.into_iter().map(|s| tokio::spawn(drain(s))).collect();
    assert_eq!(
        app.hub_connections(&wxpay_store::testing::redis_url())
            .await,
        vec![N as u64],
        "one pub/sub connection, subscribed to every watched order"
    );

    stream::iter(orders.iter())
        .map(|no| app.pay(no))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;

    for (reader, no) in readers.into_iter().zip(&orders) {
        let rest = reader.await.unwrap();
        assert_eq!(
            rest.len(),
            1,
            "exactly one message after the snapshot: {rest:?}"
        );
        assert_eq!(rest[0].out_trade_no, no.as_str());
        assert_eq!(rest[0].status(), OrderStatus::Success);
        assert!(rest[0].terminal);
    }
    eventually("every channel unsubscribed", async || {
        app.hub_connections(&wxpay_store::testing::redis_url())
            .await
            == vec![0]
    })
    .await;
}

#[tokio::test]
async fn redis_holds_exactly_the_watched_channels_through_leaves_reconnects_and_returns() {
    let redis_url = wxpay_store::testing::redis_url();
    let app = spawn_app(Options::default()).await;
    let (orders, streams) = watched(&app, 40).await;
    let mut streams: Vec<_> = streams.into_iter().map(Some).collect();
    assert_eq!(app.hub_connections(&redis_url).await, vec![40]);
    // Every third watcher leaves.
    for s in streams.iter_mut().step_by(3) {
        s.take();
    }
    eventually("the left orders unsubscribed", async || {
        app.hub_connections(&redis_url).await == vec![26]
    })
    .await;
    // A new connection subscribes what is watched, not what ever was.
    app.kill_hub_connection(&redis_url).await;
    eventually("resubscribed after the reconnect", async || {
        app.hub_connections(&redis_url).await == vec![26]
    })
    .await;
    // A left order watched again is subscribed again, and its payment arrives.
    let back = &orders[0];
    let mut s = app.watch(back.as_str()).await.expect("watch again");
    next(&mut s).await.expect("snapshot");
    assert_eq!(app.hub_connections(&redis_url).await, vec![27]);
    app.pay(back).await;
    let paid = next(&mut s).await.expect("SUCCESS");
    assert_eq!(paid.status(), OrderStatus::Success);
    for (no, s) in orders.iter().zip(streams).skip(1) {
        if let Some(mut s) = s {
            app.pay(no).await;
            assert_eq!(
                next(&mut s).await.expect("SUCCESS").status(),
                OrderStatus::Success
            );
        }
    }
}

#[tokio::test]
async fn watchers_get_success_when_redis_restarts_and_payments_happen_during_the_outage() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app(Options {
        redis_url: redis.url(),
        ..Options::default()
    })
    .await;
    let mut orders = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let no = app.create_order().await;
        let mut s = app.watch(no.as_str()).await.expect("watch");
        assert_eq!(
            next(&mut s).await.expect("snapshot").status(),
            OrderStatus::Notpay
        );
        orders.push(no);
        streams.push(s);
    }

    redis.stop();
    for no in &orders {
        // The publish fails (Redis is down); the event stays in the outbox.
        app.pay(no).await;
    }
    redis.restart().await;

    for mut s in streams {
        let paid = next(&mut s).await.expect("SUCCESS after the reconnect");
        assert_eq!(paid.status(), OrderStatus::Success);
        assert_eq!(paid.source, "SNAPSHOT", "found by the snapshot re-read");
        assert!(paid.terminal);
    }
}

#[tokio::test]
async fn watchers_get_success_when_the_hub_connection_is_killed() {
    let redis_url = wxpay_store::testing::redis_url();
    let app = spawn_app(Options::default()).await;
    let (orders, streams) = watched(&app, 3).await;
    // Paid while the connection is going away: the events are never published
    // (as when the publish hit the outage), so only the re-read can find them.
    for no in &orders {
        common::pay_in_db(app.store.as_ref(), no, EventSource::Notify).await;
    }
    app.kill_hub_connection(&redis_url).await;

    for mut s in streams {
        let paid = next(&mut s).await.expect("SUCCESS after the reconnect");
        assert_eq!(paid.status(), OrderStatus::Success);
        assert!(paid.terminal);
    }
    assert_eq!(
        app.hub_connections(&redis_url).await.len(),
        1,
        "reconnected once"
    );
}

#[tokio::test]
async fn lost_notification_reaches_every_watcher_through_one_fallback_query() {
    let app = spawn_app(Options {
        fallback_delay: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let no = app.create_order().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = app.watch(no.as_str()).await.expect("watch");
        next(&mut s).await.expect("snapshot");
        streams.push(s);
    }
    // Paid at WeChat, but the notification never arrives.
    app.querier.pay_at_wechat(&no);

    for mut s in streams {
        let paid = next(&mut s).await.expect("SUCCESS via the fallback");
        assert_eq!(paid.status(), OrderStatus::Success);
        assert_eq!(paid.source, "QUERY");
        assert!(paid.terminal);
    }
    assert_eq!(
        app.querier.calls(),
        1,
        "one query per order, not per watcher"
    );
}

#[tokio::test]
async fn many_lost_notifications_at_once_are_each_found_by_one_query() {
    // More orders coming due together than the fallback asks about at once: the
    // rest wait in its queue, and none is asked twice or forgotten.
    let app = spawn_app(Options {
        fallback_delay: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..300 {
        let no = app.create_order().await;
        // Paid at WeChat; the notification never arrives.
        app.querier.pay_at_wechat(&no);
        let mut s = app.watch(no.as_str()).await.expect("watch");
        next(&mut s).await.expect("snapshot");
        streams.push(s);
    }
    for mut s in streams {
        let paid = next(&mut s).await.expect("SUCCESS via the fallback");
        assert_eq!(paid.status(), OrderStatus::Success);
        assert!(paid.terminal);
    }
    assert_eq!(app.querier.calls(), 300, "one query per order");
}

#[tokio::test]
async fn fallback_keeps_asking_with_backoff_while_the_order_is_unpaid() {
    let app = spawn_app(Options {
        fallback_delay: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let no = app.create_order().await;
    let mut s = app.watch(no.as_str()).await.expect("watch");
    next(&mut s).await.expect("snapshot");
    // Delays 100, 200, 400 ms: three queries by ~700 ms, and not one per watcher tick.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let calls = app.querier.calls();
    assert!((2..=4).contains(&calls), "{calls} queries");
    drop(s);
    eventually("the order is no longer watched", async || {
        app.hub.watched_orders() == 0
    })
    .await;
    let after = app.querier.calls();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        app.querier.calls(),
        after,
        "no queries for an unwatched order"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_neither_blocks_others_nor_grows_memory() {
    let app = spawn_app(Options::default()).await;
    let busy = app.create_order().await;
    let other = app.create_order().await;

    // The stuck client has its own connection, as a real one would, with small
    // HTTP/2 windows so that its own buffer fills (hyper's default is 2 MiB).
    let channel = tonic::transport::Endpoint::from_shared(app.url.clone())
        .unwrap()
        .initial_stream_window_size(4 * 1024)
        .initial_connection_window_size(4 * 1024)
        .connect()
        .await
        .unwrap();
    let mut stuck_client =
        wxpay_proto::v1::order_status_service_client::OrderStatusServiceClient::new(channel);
    let mut stuck = common::watch_with(&mut stuck_client, busy.as_str(), 0)
        .await
        .expect("watch");
    next(&mut stuck).await.expect("snapshot");
    let mut reader = app.watch(busy.as_str()).await.expect("watch");
    next(&mut reader).await.expect("snapshot");
    let mut bystander = app.watch(other.as_str()).await.expect("watch");
    next(&mut bystander).await.expect("snapshot");

    // A flood of status events for the busy order (more than HTTP/2 windows hold).
    const FLOOD: i64 = 3000;
    let event = |version: i64, status: &str| OrderEvent {
        id: version,
        out_trade_no: busy.clone(),
        status: status.parse().expect("known status"),
        version,
        transaction_id: None,
        total_fee: Fee::new(1).expect("valid fee"),
        occurred_at: 0,
        source: EventSource::Notify,
        refunded_fee: 0,
    };
    let reading = tokio::spawn(drain(reader));
    // The poller confirms each event against the database before a watcher
    // sees it, so the row is set to each flooded state (as a stream of real
    // changes would) before its event goes out.
    let hold = async |version: i64, status: &str| {
        sqlx::query("UPDATE orders SET status = $2, version = $3 WHERE out_trade_no = $1")
            .bind(busy.as_str())
            .bind(status)
            .bind(version)
            .execute(app.store.pool())
            .await
            .expect("set the row");
    };
    for v in 2..=FLOOD {
        hold(v, "USERPAYING").await;
        app.publisher
            .publish(&event(v, "USERPAYING"))
            .await
            .expect("publish");
    }
    hold(FLOOD + 1, "SUCCESS").await;
    app.publisher
        .publish(&event(FLOOD + 1, "SUCCESS"))
        .await
        .expect("publish");
    app.pay(&other).await;

    let bystander_paid = next(&mut bystander).await.expect("the bystander's payment");
    assert_eq!(bystander_paid.status(), OrderStatus::Success);
    let got = reading.await.unwrap();
    let last = got.last().expect("messages");
    assert_eq!(
        (last.status(), last.version),
        (OrderStatus::Success, FLOOD + 1)
    );
    assert!(
        got.windows(2).all(|w| w[0].version < w[1].version),
        "in version order"
    );
    assert!(app.hub.retained_events(busy.as_str()) <= RETAINED_EVENTS);

    // When the stuck client finally reads, it gets the latest states, not the backlog.
    let late = drain(stuck).await;
    let last = late.last().expect("messages");
    assert_eq!(
        (last.status(), last.version),
        (OrderStatus::Success, FLOOD + 1)
    );
    // What its 4 KiB window held (~80 small messages) plus the retained newest states.
    assert!(
        late.len() < 300,
        "{} messages queued for a client that did not read",
        late.len()
    );
}
