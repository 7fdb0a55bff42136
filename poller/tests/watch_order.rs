//! The WatchOrder stream contract, end to end on real Postgres and Redis.

mod common;

use std::time::Duration;

use common::{create_order_of, next, spawn_app, watch_with, Options, TestApp};
use poller::client::{watch_order, WatchEnd};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use wxpay_core::domain::{Fee, NewRefund, OutRefundNo, OutTradeNo, RefundReason, RefundStatus};
use wxpay_proto::v1::{OrderStatus, WatchOrderRequest};
use wxpay_store::{events, RefundOutcome, RefundPlacement, RefundUpdate, Store};

#[tokio::test]
async fn watch_before_payment_gets_notpay_then_success_then_the_end() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");

    let first = next(&mut stream).await.expect("snapshot");
    assert_eq!(first.status(), OrderStatus::Notpay);
    assert_eq!(first.source, "SNAPSHOT");
    assert_eq!(first.version, 1);
    assert!(!first.terminal);

    app.pay(&no).await;
    let paid = next(&mut stream).await.expect("the payment");
    assert_eq!(paid.status(), OrderStatus::Success);
    assert_eq!(paid.source, "NOTIFY");
    assert_eq!(paid.version, 2);
    assert_eq!(paid.transaction_id, format!("4200{no}"));
    assert!(paid.terminal);
    assert_eq!(
        next(&mut stream).await,
        None,
        "the stream ends after a terminal status"
    );
}

#[tokio::test]
async fn watch_after_payment_gets_success_at_once_then_the_end() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    app.pay(&no).await;

    let mut stream = app.watch(no.as_str()).await.expect("watch");
    let first = next(&mut stream).await.expect("snapshot");
    assert_eq!(first.status(), OrderStatus::Success);
    assert_eq!(first.source, "SNAPSHOT");
    assert!(first.terminal);
    assert_eq!(next(&mut stream).await, None);
}

#[tokio::test]
async fn duplicate_events_are_sent_once() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");
    next(&mut stream).await.expect("snapshot");

    // At-least-once delivery: the relay republishes what was published directly.
    let wxpay_store::TransitionOutcome::Applied { event, .. } = common::pay_in_db(
        app.store.as_ref(),
        &no,
        wxpay_core::domain::EventSource::Notify,
    )
    .await
    else {
        panic!("the order was unpaid");
    };
    use wxpay_store::events::EventPublisher;
    app.publisher.publish(&event).await.expect("publish");
    app.publisher.publish(&event).await.expect("publish again");

    let paid = next(&mut stream).await.expect("the payment");
    assert_eq!((paid.status(), paid.version), (OrderStatus::Success, 2));
    assert_eq!(next(&mut stream).await, None, "no second SUCCESS");
}

#[tokio::test]
async fn unknown_order_is_not_found_and_a_bad_number_is_invalid() {
    let app = spawn_app(Options::default()).await;
    let err = app.watch("NOSUCHORDER123").await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = app.watch("not a valid number!").await.expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        app.hub.watched_orders(),
        0,
        "failed watches leave nothing behind"
    );
}

#[tokio::test]
async fn a_number_just_found_unknown_is_refused_without_the_database() {
    let app = spawn_app(Options::default()).await;
    // Minted like ours, but never stored: the database says so once.
    let never_stored = wxpay_core::domain::OutTradeNo::generate();
    let err = app.watch(never_stored.as_str()).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // From here on every database read fails.
    app.store.pool().close().await;
    let fresh = wxpay_core::domain::OutTradeNo::generate();
    let err = app
        .watch(fresh.as_str())
        .await
        .expect_err("needs the database");
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "a number that may be an order is looked up: {err:?}"
    );
    // Any shape of number may be an order (imported ones keep theirs): looked up.
    let err = app
        .watch("ORDER-2019-0001")
        .await
        .expect_err("needs the database");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // No read for a miss just seen.
    let err = app.watch(never_stored.as_str()).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(app.hub.watched_orders(), 0, "nothing left subscribed");
}

#[tokio::test]
async fn deadline_ends_the_stream_cleanly_without_a_terminal_message() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut client = app.client().await;
    let mut stream = watch_with(&mut client, no.as_str(), 1)
        .await
        .expect("watch");
    let first = next(&mut stream).await.expect("snapshot");
    assert_eq!(first.status(), OrderStatus::Notpay);
    assert_eq!(
        next(&mut stream).await,
        None,
        "a clean end (status OK) at the deadline"
    );
    // The server dropped the registration with the stream.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.hub.watched_orders(), 0);
}

#[tokio::test]
async fn api_token_is_required_when_set_but_health_stays_open() {
    let app = spawn_app(Options {
        api_token: Some("s3cret-token-0123456789abcdef-01234"),
        ..Options::default()
    })
    .await;
    let no = app.create_order().await;
    let err = app.watch(no.as_str()).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let end = watch_order(
        &app.url,
        no.as_str(),
        Some("s3cret-token-0123456789abcdef-01234"),
        1,
        |_| {},
    )
    .await;
    assert!(matches!(end, Ok(WatchEnd::Deadline)), "{end:?}");

    let channel = tonic::transport::Endpoint::from_shared(app.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let reply = health
        .check(HealthCheckRequest {
            service: "wxpay.v1.OrderStatusService".into(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn example_client_prints_each_change_until_the_terminal_status() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let url = app.url.clone();
    let watched = no.to_string();
    let client = tokio::spawn(async move {
        watch_order(&url, &watched, None, 0, move |e| {
            let _ = seen_tx.send(e.status());
        })
        .await
    });
    assert_eq!(seen_rx.recv().await, Some(OrderStatus::Notpay));
    app.pay(&no).await;
    let end = client.await.unwrap().expect("watch");
    assert!(
        matches!(end, WatchEnd::Terminal(ref e) if e.status() == OrderStatus::Success),
        "{end:?}"
    );
    assert_eq!(seen_rx.recv().await, Some(OrderStatus::Success));
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable_and_stops_cleanly() {
    let mut app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");
    next(&mut stream).await.expect("snapshot");

    app.stop();
    let err = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends promptly")
        .expect_err("an error status");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .expect("a clean stop");
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");
    next(&mut stream).await.expect("snapshot");

    let body = reqwest::get(&app.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "poller_active_streams",
        "poller_subscribed_channels",
        "poller_events_delivered_total",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

#[tokio::test]
async fn past_its_stream_cap_the_poller_refuses_instead_of_growing() {
    let app = spawn_app(Options {
        max_streams: 1,
        ..Options::default()
    })
    .await;
    let first_order = app.create_order().await;
    let second_order = app.create_order().await;
    let mut first = app
        .watch(first_order.as_str())
        .await
        .expect("the first stream");
    next(&mut first).await.expect("its snapshot");

    let refused = app
        .watch(second_order.as_str())
        .await
        .expect_err("past the cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    // The slot comes back when a stream ends.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = app.watch(second_order.as_str()).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("a stream after the first one ended");
    next(&mut again).await.expect("its snapshot");
}

/// Refunds `fen` of the order (placed, then settled SUCCESS as WeChat's
/// notification would) and publishes the order's change.
async fn refund(app: &TestApp, no: &OutTradeNo, out_refund_no: &str, fen: i64) {
    let store = app.store.as_ref();
    let placed = store
        .insert_refund(&NewRefund {
            out_refund_no: OutRefundNo::parse(out_refund_no).unwrap(),
            out_trade_no: no.clone(),
            refund_fee: Fee::new(fen).unwrap(),
            reason: RefundReason::parse("").unwrap(),
        })
        .await
        .expect("insert refund");
    assert!(matches!(placed, RefundPlacement::Placed(_)), "{placed:?}");
    let outcome = store
        .update_refund(&RefundUpdate {
            out_refund_no: OutRefundNo::parse(out_refund_no).unwrap(),
            out_trade_no: no.clone(),
            refund_fee: Fee::new(fen).unwrap(),
            refund_id: Some(format!("5000{out_refund_no}")),
            transaction_id: None,
            total_fee: None,
            status: RefundStatus::Success,
            succeeded_at: None,
            failure: None,
        })
        .await
        .expect("settle refund");
    let RefundOutcome::Applied { event, .. } = outcome else {
        panic!("refund not applied: {outcome:?}");
    };
    events::publish_committed(store, &app.publisher, &event).await;
}

#[tokio::test]
async fn with_include_refunds_the_stream_goes_on_past_success_with_each_refund() {
    let app = spawn_app(Options::default()).await;
    let no = create_order_of(app.store.as_ref(), 100).await;
    app.pay(&no).await;
    let mut client = app.client().await;
    let mut stream = client
        .watch_order(WatchOrderRequest {
            out_trade_no: no.to_string(),
            timeout_seconds: 30,
            include_refunds: true,
        })
        .await
        .expect("watch")
        .into_inner();

    let paid = next(&mut stream).await.expect("snapshot");
    assert_eq!(paid.status, OrderStatus::Success as i32);
    assert!(!paid.terminal, "a refund watch does not end at SUCCESS");

    refund(&app, &no, &format!("a{no}"), 40).await;
    let first = next(&mut stream).await.expect("first refund");
    assert_eq!(
        (
            first.status,
            first.refunded_fee,
            first.source.as_str(),
            first.terminal
        ),
        (OrderStatus::Refund as i32, 40, "REFUND", false)
    );

    refund(&app, &no, &format!("b{no}"), 60).await;
    let last = next(&mut stream).await.expect("second refund");
    assert_eq!((last.refunded_fee, last.terminal), (100, true));
    assert!(
        next(&mut stream).await.is_none(),
        "nothing is left to refund"
    );

    // Without the flag the same order's stream is one terminal message.
    let mut plain = app.watch(no.as_str()).await.expect("watch");
    let only = next(&mut plain).await.expect("snapshot");
    assert_eq!((only.refunded_fee, only.terminal), (100, true));
}

#[tokio::test]
async fn with_tls_cert_and_key_the_stream_is_served_over_tls_only() {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
    let tls = wxpay_runtime::tls::ServerTls::from_pem(
        server.pem().into_bytes(),
        server_key.serialize_pem().into_bytes(),
    )
    .expect("valid PEM");
    let app = spawn_app(Options {
        tls: Some(tls),
        ..Options::default()
    })
    .await;
    let no = app.create_order().await;

    let channel = tonic::transport::Endpoint::from_shared(app.url.clone())
        .expect("url")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("a TLS connection with the CA");
    let mut client =
        wxpay_proto::v1::order_status_service_client::OrderStatusServiceClient::new(channel);
    let mut stream = watch_with(&mut client, no.as_str(), 5)
        .await
        .expect("watch");
    let first = next(&mut stream).await.expect("snapshot");
    assert_eq!(first.status, OrderStatus::Notpay as i32);

    // Plaintext gRPC to the same port gets nowhere.
    let plain = format!("http://{}", app.url.trim_start_matches("https://"));
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(plain)?
            .connect()
            .await?;
        let mut client =
            wxpay_proto::v1::order_status_service_client::OrderStatusServiceClient::new(channel);
        watch_with(&mut client, no.as_str(), 5)
            .await
            .map_err(|s| -> Box<dyn std::error::Error> { Box::new(s) })?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "a plaintext client was served"
    );
}

#[tokio::test]
async fn one_connection_holds_at_most_its_share_of_streams_and_the_rest_wait() {
    let app = spawn_app(Options {
        max_streams_per_connection: 2,
        ..Options::default()
    })
    .await;
    let no = app.create_order().await;
    // One HTTP/2 connection, shared by every stream below.
    let mut client = app.client().await;
    let mut first = watch_with(&mut client, no.as_str(), 30)
        .await
        .expect("first");
    let mut second = watch_with(&mut client, no.as_str(), 30)
        .await
        .expect("second");
    next(&mut first).await.expect("snapshot");
    next(&mut second).await.expect("snapshot");

    // The third stream on the same connection is held by the client until one
    // of the two ends (the server's SETTINGS allow two): no message meanwhile.
    let mut third_client = client.clone();
    let no_third = no.to_string();
    let third = tokio::spawn(async move {
        let mut s = watch_with(&mut third_client, &no_third, 30).await?;
        s.message().await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third stream was served on a 2-stream connection"
    );

    drop(first);
    let snapshot = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot was free")
        .expect("task")
        .expect("the third stream")
        .expect("its snapshot");
    assert_eq!(snapshot.status, OrderStatus::Notpay as i32);
}

/// Whoever can publish on Redis (compose runs it without a password) is not
/// the database: a SUCCESS published by hand, raw on the order's channel, for
/// an unpaid order reaches none of its watchers, whether it names a version
/// the row never reached or reuses the row's own; the real payment after it
/// still does, with its own source and version.
#[tokio::test]
async fn a_status_published_on_redis_by_hand_reaches_no_watcher() {
    let redis_url = wxpay_store::testing::redis_url();
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");
    assert_eq!(
        next(&mut stream).await.expect("snapshot").status(),
        OrderStatus::Notpay
    );

    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for version in [1, 2, 3, 99] {
        let forged = serde_json::json!({
            "id": 1, "out_trade_no": no.as_str(), "status": "SUCCESS", "version": version,
            "transaction_id": "4200000000000000000000000001", "total_fee": 1,
            "occurred_at": 0, "source": "NOTIFY", "refunded_fee": 0,
        });
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(wxpay_store::events::channel(no.as_str()))
            .arg(forged.to_string())
            .query_async(&mut conn)
            .await
            .expect("publish");
        assert_eq!(receivers, 1, "the poller is subscribed and receives it");
    }
    let shown = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    assert!(
        shown.is_err(),
        "a forged status reached the watcher: {shown:?}"
    );

    app.pay(&no).await;
    let paid = next(&mut stream).await.expect("the real payment");
    assert_eq!(
        (paid.status(), paid.version, paid.source.as_str()),
        (OrderStatus::Success, 2, "NOTIFY")
    );
    let metrics = reqwest::get(&app.metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("poller_events_unconfirmed_total"),
        "forged events are counted"
    );
}

/// The value of a counter in the poller's `/metrics` (0 before its first increment).
async fn counter(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::get(&app.metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A flood of forged events for one watched order (5,000 SUCCESS claims, each
/// a version higher than the last, pipelined) costs the database far fewer
/// reads than events: one read of the order is in flight at a time and the
/// claims that arrive meanwhile are judged together. None reaches the watcher.
#[tokio::test]
async fn a_flood_of_forged_events_costs_few_reads_and_reaches_no_watcher() {
    const FLOOD: i64 = 5_000;
    let app = spawn_app(Options::default()).await;
    let no = app.create_order().await;
    let mut stream = app.watch(no.as_str()).await.expect("watch");
    next(&mut stream).await.expect("snapshot");
    let reads_before = counter(&app, "poller_confirming_reads_total").await;

    let client = redis::Client::open(wxpay_store::testing::redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut pipe = redis::pipe();
    for version in 2..FLOOD + 2 {
        let forged = serde_json::json!({
            "id": version, "out_trade_no": no.as_str(), "status": "SUCCESS", "version": version,
            "transaction_id": "4200000000000000000000000001", "total_fee": 1,
            "occurred_at": 0, "source": "NOTIFY", "refunded_fee": 0,
        });
        pipe.cmd("PUBLISH")
            .arg(wxpay_store::events::channel(no.as_str()))
            .arg(forged.to_string())
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.expect("publish");

    let shown = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    assert!(
        shown.is_err(),
        "a forged status reached the watcher: {shown:?}"
    );
    let reads = counter(&app, "poller_confirming_reads_total").await - reads_before;
    eprintln!("{FLOOD} forged events cost {reads} confirming reads");
    // Other tests of this binary share the counter, so the bound is loose; a
    // read per event would be 5,000.
    assert!(
        reads >= 1.0 && reads < (FLOOD / 2) as f64,
        "{reads} reads for {FLOOD} events"
    );
    app.pay(&no).await;
    let paid = next(&mut stream).await.expect("the real payment");
    assert_eq!((paid.status(), paid.version), (OrderStatus::Success, 2));
}
