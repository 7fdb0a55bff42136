//! The in-process bus (`wxpay_store::LocalBus`) feeding the poller's hub, as the
//! single-process mode wires them: delivery, per-order subscription, and that
//! the bus keeps nothing.

use std::time::Duration;

use poller::Hub;
use wxpay_core::domain::{EventSource, Fee, OrderEvent, OrderStatus, OutTradeNo};
use wxpay_store::{EventPublisher, LocalBus};

fn paid(out_trade_no: &str, version: i64) -> OrderEvent {
    OrderEvent {
        id: version,
        out_trade_no: OutTradeNo::parse(out_trade_no).expect("valid order number"),
        status: OrderStatus::Success,
        version,
        transaction_id: Some("4200000000000000000000000001".into()),
        total_fee: Fee::new(1).expect("valid fee"),
        occurred_at: 0,
        source: EventSource::Notify,
        refunded_fee: 0,
    }
}

fn order(s: &str) -> OutTradeNo {
    match OutTradeNo::parse(s) {
        Ok(o) => o,
        Err(e) => panic!("test order number {s}: {e}"),
    }
}

fn hub_on(bus: &LocalBus) -> Hub {
    Hub::new(None, None, |sink| bus.feed(sink))
}

#[tokio::test]
async fn a_published_event_reaches_the_watchers_of_its_order() {
    let bus = LocalBus::new();
    let hub = hub_on(&bus);
    let mut watch = hub.watch(&order("A1")).await;

    bus.publish(&paid("A1", 2)).await.expect("publish");

    let woken = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
    assert!(woken.is_ok(), "the watcher was woken");
    let latest = watch.read(|s| s.latest().cloned());
    assert_eq!(
        latest.map(|e| (e.version, e.status)),
        Some((2, OrderStatus::Success))
    );
}

#[tokio::test]
async fn events_of_other_orders_are_not_delivered() {
    let bus = LocalBus::new();
    let hub = hub_on(&bus);
    let mut watch = hub.watch(&order("A1")).await;

    bus.publish(&paid("B2", 2)).await.expect("publish");

    assert!(!watch.has_changed());
    assert_eq!(watch.read(|s| s.retained()), 0);
}

#[tokio::test]
async fn the_first_watcher_subscribes_and_the_last_one_unsubscribes() {
    let bus = LocalBus::new();
    let hub = hub_on(&bus);

    let first = hub.watch(&order("A1")).await;
    let second = hub.watch(&order("A1")).await;
    let other = hub.watch(&order("B2")).await;
    assert_eq!(
        bus.subscribed(),
        2,
        "one channel per order, not per watcher"
    );

    drop(first);
    assert_eq!(bus.subscribed(), 2, "A1 still has a watcher");
    drop(second);
    assert_eq!(bus.subscribed(), 1, "A1's last watcher left");
    drop(other);
    assert_eq!(bus.subscribed(), 0);
}

#[tokio::test]
async fn publishing_with_no_hub_or_no_watcher_succeeds_and_keeps_nothing() {
    let bus = LocalBus::new();
    bus.publish(&paid("A1", 2)).await.expect("no hub yet");

    let hub = hub_on(&bus);
    bus.publish(&paid("A1", 3)).await.expect("nobody watching");
    let mut watch = hub.watch(&order("A1")).await;
    assert_eq!(
        watch.read(|s| s.retained()),
        0,
        "an unwatched event is not replayed (the snapshot covers it)"
    );
    assert!(bus.ping().await.is_ok());
}
