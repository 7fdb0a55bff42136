//! The storage test suite every [`Store`] implementation must pass: Postgres
//! today, SQLite for the embedded default. Each function takes a fresh, empty
//! store and panics on a failed expectation; `store_suite!` turns the list into
//! `#[tokio::test]`s for one backend.

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use crate::{
    Anomaly, AnomalyKind, Guard, InsertOutcome, NotificationRecord, Store, StoreError, Transition,
    TransitionOutcome,
};
use wxpay_core::{
    domain::{
        Attach, Caller, ClientIp, Description, EventSource, Fee, IdempotencyKey, MerchantName,
        NewOrder, OpenId, Order, OrderEvent, OrderStatus, OutTradeNo, Placement, ProductId,
        SceneInfo,
    },
    wechat::{SignType, TradeType},
};

/// A valid new order with a unique number and key.
pub fn new_order(fee: i64) -> NewOrder {
    let no = OutTradeNo::generate();
    NewOrder {
        caller: Caller::default_caller(),
        idempotency_key: IdempotencyKey::parse(&format!("key-{no}")).expect("valid key"),
        out_trade_no: no,
        openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").expect("valid openid"),
        description: Description::parse("腾讯充值中心-QQ会员充值").expect("valid description"),
        total_fee: Fee::new(fee).expect("valid fee"),
        attach: Attach::parse("cart=42").expect("valid attach"),
        client_ip: ClientIp::parse("203.0.113.7").expect("valid ip"),
        sign_type: SignType::HmacSha256,
        expires_at: Some(Utc::now() + chrono::Duration::minutes(30)),
        placement: Placement::default(),
    }
}

fn pay(no: &OutTradeNo, txn: &str) -> Transition {
    Transition {
        out_trade_no: no.clone(),
        to: OrderStatus::Success,
        transaction_id: Some(txn.to_owned()),
        cash_fee: Some(101),
        paid_at: Some(Utc::now()),
        source: EventSource::Notify,
        guard: None,
    }
}

async fn insert(store: &dyn Store, new: &NewOrder) -> Order {
    match store.insert_order(new).await.expect("insert") {
        InsertOutcome::Inserted(o) => o,
        InsertOutcome::KeyTaken(o) => panic!("fresh key reported taken by {}", o.out_trade_no),
    }
}

pub async fn inserted_orders_read_back_exactly(store: Arc<dyn Store>) {
    let new = new_order(101);
    let o = insert(store.as_ref(), &new).await;
    assert_eq!(o.status, OrderStatus::NotPay);
    assert_eq!(o.version, 1);
    assert_eq!(o.total_fee.fen(), 101);
    assert_eq!(o.description, new.description);
    assert_eq!(o.sign_type, SignType::HmacSha256);
    assert_eq!(o.prepay_id, None);
    let read = store
        .order(&new.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read, o);
    let by_key = store
        .order_by_idempotency_key(&new.caller, &new.idempotency_key)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(by_key, o);
    let missing = store.order(&OutTradeNo::generate()).await.expect("read");
    assert_eq!(missing, None);
}

pub async fn a_taken_idempotency_key_returns_the_first_order(store: Arc<dyn Store>) {
    let first = new_order(100);
    let o = insert(store.as_ref(), &first).await;
    let mut second = new_order(200);
    second.idempotency_key = first.idempotency_key.clone();
    match store.insert_order(&second).await.expect("insert") {
        InsertOutcome::KeyTaken(existing) => assert_eq!(existing, o),
        InsertOutcome::Inserted(_) => panic!("a second order was stored under the same key"),
    }
    assert_eq!(store.order(&second.out_trade_no).await.expect("read"), None);
}

pub async fn idempotency_keys_are_scoped_to_their_caller(store: Arc<dyn Store>) {
    let shop = new_order(100);
    let shop_order = insert(store.as_ref(), &shop).await;
    // Another service reuses the shop's key: its own order, not the shop's.
    let mut billing = new_order(300);
    billing.caller = Caller::parse("billing").expect("valid caller");
    billing.idempotency_key = shop.idempotency_key.clone();
    let billing_order = insert(store.as_ref(), &billing).await;
    assert_ne!(billing_order.out_trade_no, shop_order.out_trade_no);
    assert_eq!(billing_order.total_fee.fen(), 300);
    let read = |caller: Caller| {
        let store = store.clone();
        let key = shop.idempotency_key.clone();
        async move {
            store
                .order_by_idempotency_key(&caller, &key)
                .await
                .expect("read")
                .map(|o| o.out_trade_no)
        }
    };
    assert_eq!(
        read(shop.caller.clone()).await,
        Some(shop_order.out_trade_no.clone())
    );
    assert_eq!(
        read(billing.caller.clone()).await,
        Some(billing_order.out_trade_no)
    );
    assert_eq!(read(Caller::parse("crm").expect("valid")).await, None);
    // Within one caller the key still holds: a retry gets the first order.
    let mut retry = new_order(999);
    retry.caller = billing.caller.clone();
    retry.idempotency_key = shop.idempotency_key.clone();
    match store.insert_order(&retry).await.expect("insert") {
        InsertOutcome::KeyTaken(existing) => assert_eq!(existing.total_fee.fen(), 300),
        InsertOutcome::Inserted(_) => panic!("a caller stored two orders under one key"),
    }
}

pub async fn prepay_ids_are_recorded(store: Arc<dyn Store>) {
    let new = new_order(1);
    insert(store.as_ref(), &new).await;
    let until = Utc::now() + chrono::Duration::hours(2);
    let o = store
        .set_prepay(
            &new.out_trade_no,
            "wx201410272009395522657a690389285100",
            None,
            until,
        )
        .await
        .expect("set");
    assert_eq!(
        o.prepay_id.as_deref(),
        Some("wx201410272009395522657a690389285100")
    );
    assert_eq!(o.version, 1, "recording a prepay_id is not a status change");
    assert!(matches!(
        store
            .set_prepay(&OutTradeNo::generate(), "wx1", None, until)
            .await,
        Err(StoreError::NotFound)
    ));
}

/// Every order keeps the merchant and trade type it was placed with, and what
/// that trade type needs: the later calls about it go to the same merchant.
pub async fn each_order_keeps_its_merchant_and_trade_type(store: Arc<dyn Store>) {
    let jsapi = new_order(1);
    insert(store.as_ref(), &jsapi).await;
    let read = store
        .order(&jsapi.out_trade_no)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(read.placement, Placement::default());
    assert_eq!(read.placement.merchant.as_str(), "default");
    assert_eq!(read.pay_url, None);

    let mut native = new_order(2);
    native.openid = OpenId::empty();
    native.sign_type = SignType::Md5;
    native.placement = Placement {
        merchant: MerchantName::parse("shop-b").expect("name"),
        trade_type: TradeType::Native,
        sub_openid: OpenId::empty(),
        product_id: Some(ProductId::parse("sku-9").expect("product")),
        scene_info: None,
    };
    insert(store.as_ref(), &native).await;
    let until = Utc::now() + chrono::Duration::minutes(115);
    let code_url = "weixin://wxpay/bizpayurl?pr=abc123";
    let placed = store
        .set_prepay(&native.out_trade_no, "wx-native", Some(code_url), until)
        .await
        .expect("set");
    assert_eq!(placed.placement, native.placement);
    assert!(placed.openid.is_empty());
    assert_eq!(placed.pay_url.as_deref(), Some(code_url));

    let mut h5 = new_order(3);
    h5.placement = Placement {
        merchant: MerchantName::parse("platform").expect("name"),
        trade_type: TradeType::Mweb,
        sub_openid: OpenId::parse_field("sub_openid", "oSub-1").expect("sub openid"),
        product_id: None,
        scene_info: Some(
            SceneInfo::parse(
                r#"{"h5_info":{"type":"Wap","wap_url":"https://m.example","wap_name":"m"}}"#,
            )
            .expect("scene"),
        ),
    };
    insert(store.as_ref(), &h5).await;
    let read = store
        .order(&h5.out_trade_no)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(read.placement, h5.placement);
}

pub async fn a_payment_bumps_the_version_and_writes_one_event(store: Arc<dyn Store>) {
    let new = new_order(101);
    insert(store.as_ref(), &new).await;
    match store
        .transition(&pay(&new.out_trade_no, "4200000001"))
        .await
        .expect("transition")
    {
        TransitionOutcome::Applied {
            order,
            event,
            previous,
        } => {
            assert_eq!(previous, OrderStatus::NotPay);
            assert_eq!(order.status, OrderStatus::Success);
            assert_eq!(order.version, 2);
            assert_eq!(order.transaction_id.as_deref(), Some("4200000001"));
            assert_eq!(order.cash_fee, Some(101));
            assert!(order.paid_at.is_some());
            assert_eq!(event.version, 2);
            assert_eq!(event.status, OrderStatus::Success);
            assert_eq!(event.total_fee.fen(), 101);
            assert_eq!(event.source, EventSource::Notify);
            assert!(event.id > 0);
        }
        TransitionOutcome::Unchanged { order } => panic!("payment not applied: {order:?}"),
    }
    let events = store
        .unpublished_events(Duration::ZERO, 100)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].out_trade_no, new.out_trade_no);
}

pub async fn a_disallowed_transition_changes_nothing(store: Arc<dyn Store>) {
    let new = new_order(5);
    insert(store.as_ref(), &new).await;
    store
        .transition(&pay(&new.out_trade_no, "4200000002"))
        .await
        .expect("pay");
    let close = Transition {
        to: OrderStatus::Closed,
        transaction_id: None,
        cash_fee: None,
        paid_at: None,
        source: EventSource::Close,
        ..pay(&new.out_trade_no, "")
    };
    match store.transition(&close).await.expect("transition") {
        TransitionOutcome::Unchanged { order } => {
            assert_eq!(order.status, OrderStatus::Success);
            assert_eq!(order.version, 2);
        }
        TransitionOutcome::Applied { .. } => panic!("a paid order was closed"),
    }
    // The duplicate payment is also a no-op.
    assert!(matches!(
        store
            .transition(&pay(&new.out_trade_no, "4200000002"))
            .await
            .expect("dup"),
        TransitionOutcome::Unchanged { .. }
    ));
    assert_eq!(
        store
            .unpublished_events(Duration::ZERO, 100)
            .await
            .expect("events")
            .len(),
        1
    );
}

pub async fn many_orders_read_in_one_call(store: Arc<dyn Store>) {
    let a = new_order(100);
    let b = new_order(200);
    insert(store.as_ref(), &a).await;
    insert(store.as_ref(), &b).await;
    let unknown = OutTradeNo::generate();
    let asked = [
        a.out_trade_no.clone(),
        unknown,
        b.out_trade_no.clone(),
        a.out_trade_no.clone(),
    ];
    let mut got: Vec<(String, i64)> = store
        .orders(&asked)
        .await
        .expect("read")
        .into_iter()
        .map(|o| (o.out_trade_no.to_string(), o.total_fee.fen()))
        .collect();
    got.sort();
    let mut want = vec![
        (a.out_trade_no.to_string(), 100),
        (b.out_trade_no.to_string(), 200),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "each existing order once, the unknown one left out"
    );
    assert!(store.orders(&[]).await.expect("read").is_empty());
}

pub async fn a_guarded_transition_moves_only_the_order_it_describes(store: Arc<dyn Store>) {
    let new = new_order(250);
    insert(store.as_ref(), &new).await;
    let right = Guard {
        merchant: new.placement.merchant.clone(),
        total_fee: new.total_fee,
    };
    let wrong = [
        Guard {
            merchant: MerchantName::parse("another").expect("valid name"),
            ..right.clone()
        },
        Guard {
            total_fee: Fee::new(25).expect("valid fee"),
            ..right.clone()
        },
    ];
    for guard in wrong {
        let t = Transition {
            guard: Some(guard.clone()),
            ..pay(&new.out_trade_no, "4200000250")
        };
        match store.transition(&t).await.expect("transition") {
            TransitionOutcome::Unchanged { order } => {
                assert_eq!(order.status, OrderStatus::NotPay, "{guard:?}");
                assert_eq!(order.version, 1);
                assert_eq!(order.transaction_id, None);
                assert!(!guard.admits(&order));
            }
            TransitionOutcome::Applied { .. } => {
                panic!("{guard:?} moved an order it does not describe")
            }
        }
    }
    assert!(
        store
            .unpublished_events(Duration::ZERO, 100)
            .await
            .expect("events")
            .is_empty(),
        "a refused guard wrote an event"
    );
    let t = Transition {
        guard: Some(right.clone()),
        ..pay(&new.out_trade_no, "4200000250")
    };
    match store.transition(&t).await.expect("transition") {
        TransitionOutcome::Applied { order, .. } => {
            assert_eq!(order.status, OrderStatus::Success);
            assert!(right.admits(&order));
        }
        TransitionOutcome::Unchanged { order } => panic!("the right guard was refused: {order:?}"),
    }
    let missing = Transition {
        guard: Some(right.clone()),
        ..pay(&OutTradeNo::generate(), "4200000251")
    };
    assert!(matches!(
        store.transition(&missing).await,
        Err(StoreError::NotFound)
    ));
    // How the order was placed (MD5 here, HMAC-SHA256 above) is not among
    // the facts: a notification that verifies under the merchant's key is
    // the order's whichever algorithm it names.
    let mut md5 = new_order(250);
    md5.sign_type = SignType::Md5;
    insert(store.as_ref(), &md5).await;
    let t = Transition {
        guard: Some(right),
        ..pay(&md5.out_trade_no, "4200000252")
    };
    assert!(matches!(
        store.transition(&t).await.expect("transition"),
        TransitionOutcome::Applied { .. }
    ));
}

pub async fn concurrent_duplicate_payments_apply_once(store: Arc<dyn Store>) {
    let new = new_order(300);
    insert(store.as_ref(), &new).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        let t = pay(&new.out_trade_no, "4200000003");
        tasks.push(tokio::spawn(async move { store.transition(&t).await }));
    }
    let mut applied = 0;
    for t in tasks {
        if let TransitionOutcome::Applied { .. } = t.await.expect("join").expect("transition") {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let o = store
        .order(&new.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(o.version, 2);
    assert_eq!(
        store
            .unpublished_events(Duration::ZERO, 100)
            .await
            .expect("events")
            .len(),
        1
    );
}

pub async fn the_ledger_marks_every_event_it_published(store: Arc<dyn Store>) {
    // 300 payments at once through the ledger: each event is published
    // straight away and its mark goes into a batch; after drain none is left
    // for the relay, and each order's event reached the bus exactly once.
    struct Received(std::sync::Mutex<Vec<String>>);
    impl crate::EventSink for Arc<Received> {
        fn deliver(&self, event: OrderEvent) {
            if let Ok(mut r) = self.0.lock() {
                r.push(event.out_trade_no.to_string());
            }
        }
        fn resync(&self) {}
    }
    let bus = Arc::new(crate::LocalBus::new());
    let received = Arc::new(Received(std::sync::Mutex::new(Vec::new())));
    let sink = received.clone();
    let feed = bus.feed(sink);
    let ledger = crate::Ledger::new(store.clone(), bus.clone());
    let mut orders = Vec::new();
    for _ in 0..300 {
        let new = new_order(3);
        insert(store.as_ref(), &new).await;
        crate::EventFeed::subscribe(&feed, new.out_trade_no.as_str()).await;
        orders.push(new.out_trade_no);
    }
    let applies = orders.iter().enumerate().map(|(i, no)| {
        let ledger = ledger.clone();
        let t = pay(no, &format!("42000{i:05}"));
        async move { ledger.apply(&t).await }
    });
    for outcome in futures::future::join_all(applies).await {
        assert!(
            matches!(outcome, Ok(TransitionOutcome::Applied { .. })),
            "{outcome:?}"
        );
    }
    ledger.drain().await;
    let left = store
        .unpublished_events(Duration::ZERO, 1000)
        .await
        .expect("events");
    assert!(left.is_empty(), "{} events left unmarked", left.len());
    let mut got = received.0.lock().map(|r| r.clone()).unwrap_or_default();
    got.sort();
    let mut want: Vec<String> = orders.iter().map(|o| o.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

pub async fn a_transaction_id_belongs_to_one_order(store: Arc<dyn Store>) {
    let a = new_order(1);
    let b = new_order(1);
    insert(store.as_ref(), &a).await;
    insert(store.as_ref(), &b).await;
    store
        .transition(&pay(&a.out_trade_no, "4200000004"))
        .await
        .expect("pay a");
    let err = store.transition(&pay(&b.out_trade_no, "4200000004")).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let o = store
        .order(&b.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(o.status, OrderStatus::NotPay);
    assert_eq!(o.version, 1);
}

pub async fn transitions_of_unknown_orders_are_not_found(store: Arc<dyn Store>) {
    let r = store
        .transition(&pay(&OutTradeNo::generate(), "4200000005"))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
}

/// Records every event it is handed, as a bus that never fails.
#[derive(Default)]
struct RecordingBus {
    published: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl crate::EventPublisher for RecordingBus {
    async fn publish(&self, event: &OrderEvent) -> Result<(), crate::events::PublishError> {
        // Let the other relay interleave between two publishes.
        tokio::task::yield_now().await;
        self.published
            .lock()
            .map_err(|_| crate::events::PublishError::Unavailable("poisoned".into()))?
            .push(event.id);
        Ok(())
    }
    async fn ping(&self) -> Result<(), crate::events::PublishError> {
        Ok(())
    }
}

pub async fn two_relays_at_once_publish_every_event_once(store: Arc<dyn Store>) {
    // Two replicas' relays over one outbox: one holds the lease and publishes
    // the whole backlog, the other stands by; nothing goes out twice or never.
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..40 {
        let new = new_order(10 + i);
        insert(store.as_ref(), &new).await;
        if let TransitionOutcome::Applied { event, .. } = store
            .transition(&pay(&new.out_trade_no, &format!("4200009{i:03}")))
            .await
            .expect("pay")
        {
            ids.insert(event.id);
        }
    }
    assert_eq!(ids.len(), 40);
    let bus = Arc::new(RecordingBus::default());
    let relay = |lease: Duration| {
        let mut relay = crate::Relay::new(store.clone(), bus.clone());
        relay.batch = 7;
        relay.lease = lease;
        relay
    };
    let (a, b) = (
        relay(Duration::from_secs(60)),
        relay(Duration::from_secs(60)),
    );
    let (ta, tb) = tokio::join!(a.turn(Duration::ZERO), b.turn(Duration::ZERO));
    let (ta, tb) = (ta.expect("relay a"), tb.expect("relay b"));
    assert!(
        matches!((ta, tb), (Some(40), None) | (None, Some(40))),
        "one relay did the whole backlog: {ta:?} {tb:?}"
    );
    let published = bus.published.lock().expect("lock").clone();
    assert_eq!(published.len(), 40, "each event once");
    let distinct: std::collections::BTreeSet<i64> = published.iter().copied().collect();
    assert_eq!(distinct, ids, "every committed event went out");
    assert_eq!(store.outbox_backlog().await.expect("backlog").count, 0);
}

pub async fn a_relay_takes_over_when_the_holders_lease_runs_out(store: Arc<dyn Store>) {
    let bus = Arc::new(RecordingBus::default());
    let mut holder = crate::Relay::new(store.clone(), bus.clone());
    holder.lease = Duration::from_millis(300);
    let standby = crate::Relay::new(store.clone(), bus.clone());
    let paid = |txn: &'static str| {
        let store = store.clone();
        async move {
            let new = new_order(10);
            insert(store.as_ref(), &new).await;
            store
                .transition(&pay(&new.out_trade_no, txn))
                .await
                .expect("pay");
        }
    };
    paid("4200008000").await;
    assert_eq!(holder.turn(Duration::ZERO).await.expect("turn"), Some(1));
    // The holder dies here. A payment committed after it is not lost:
    paid("4200008001").await;
    assert_eq!(
        standby.turn(Duration::ZERO).await.expect("turn"),
        None,
        "the lease still runs"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(standby.turn(Duration::ZERO).await.expect("turn"), Some(1));
    assert_eq!(bus.published.lock().expect("lock").len(), 2, "each once");
    // With nothing due a turn takes no lease (an idle relay only reads).
    assert_eq!(holder.turn(Duration::ZERO).await.expect("turn"), Some(0));
}

pub async fn the_outbox_hands_out_unpublished_events_until_marked(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let new = new_order(10 + i);
        insert(store.as_ref(), &new).await;
        if let TransitionOutcome::Applied { event, .. } = store
            .transition(&pay(&new.out_trade_no, &format!("42000001{i}")))
            .await
            .expect("pay")
        {
            ids.push(event.id);
        }
    }
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.count, 3);
    assert!(backlog.oldest_age.is_some());
    // Too young for a relay that waits a minute.
    assert!(store
        .unpublished_events(Duration::from_secs(60), 100)
        .await
        .expect("events")
        .is_empty());
    let events = store
        .unpublished_events(Duration::ZERO, 100)
        .await
        .expect("events");
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids,
        "oldest first"
    );
    store.mark_published(&ids[..2]).await.expect("mark");
    let rest = store
        .unpublished_events(Duration::ZERO, 100)
        .await
        .expect("events");
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[2]]);
    store.mark_published(&ids).await.expect("mark");
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.count, 0);
    assert_eq!(backlog.oldest_age, None);
}

pub async fn notifications_and_anomalies_are_kept(store: Arc<dyn Store>) {
    store
        .record_notification(&NotificationRecord {
            kind: "pay".into(),
            out_trade_no: None,
            verdict: "malformed".into(),
            raw_body: b"\xff\xfe not xml".to_vec(),
            sign_type: None,
        })
        .await
        .expect("record notification");
    store
        .record_anomaly(&Anomaly {
            kind: AnomalyKind::AmountMismatch,
            out_trade_no: Some("X1".into()),
            detail: "expected 100, got 1".into(),
        })
        .await
        .expect("record anomaly");
    store.ping().await.expect("ping");
}

pub async fn notifications_are_kept_in_batches(store: Arc<dyn Store>) {
    let rows: Vec<NotificationRecord> = (0..3)
        .map(|i| NotificationRecord {
            kind: "pay".into(),
            out_trade_no: (i != 1).then(|| format!("X{i}")),
            verdict: "duplicate".into(),
            raw_body: format!("<xml><n>{i}</n></xml>").into_bytes(),
            sign_type: [Some(SignType::Md5), None, Some(SignType::HmacSha256)][i],
        })
        .collect();
    store.record_notifications(&rows).await.expect("batch");
    store.record_notifications(&[]).await.expect("empty batch");
}

/// Expands to one `#[tokio::test]` per suite function, each on a fresh store
/// made by `$make` (an async expression returning `Arc<dyn Store>`).
fn close(no: &OutTradeNo) -> Transition {
    Transition {
        to: OrderStatus::Closed,
        transaction_id: None,
        cash_fee: None,
        paid_at: None,
        source: EventSource::Close,
        guard: None,
        ..pay(no, "")
    }
}

pub async fn a_verified_payment_wins_over_a_local_close(store: Arc<dyn Store>) {
    let new = new_order(7);
    insert(store.as_ref(), &new).await;
    store
        .transition(&close(&new.out_trade_no))
        .await
        .expect("close");
    match store
        .transition(&pay(&new.out_trade_no, "4200000007"))
        .await
        .expect("pay")
    {
        TransitionOutcome::Applied {
            order, previous, ..
        } => {
            assert_eq!(
                previous,
                OrderStatus::Closed,
                "the caller can tell it was closed"
            );
            assert_eq!(order.status, OrderStatus::Success);
            assert_eq!(order.version, 3);
        }
        TransitionOutcome::Unchanged { order } => {
            panic!("a payment WeChat confirmed was refused: {order:?}")
        }
    }
}

pub async fn prepay_ids_are_kept_only_for_unpaid_orders(store: Arc<dyn Store>) {
    let new = new_order(8);
    insert(store.as_ref(), &new).await;
    store
        .transition(&close(&new.out_trade_no))
        .await
        .expect("close");
    let until = Utc::now() + chrono::Duration::minutes(115);
    let order = store
        .set_prepay(&new.out_trade_no, "wx-late", None, until)
        .await
        .expect("set_prepay");
    assert_eq!(order.status, OrderStatus::Closed);
    assert_eq!(
        order.prepay_id, None,
        "a closed order got payment parameters"
    );
}

pub async fn due_orders_are_claimed_once_then_when_scheduled(store: Arc<dyn Store>) {
    let unpaid = insert(store.as_ref(), &new_order(9)).await;
    let paid = insert(store.as_ref(), &new_order(10)).await;
    store
        .transition(&pay(&paid.out_trade_no, "4200000010"))
        .await
        .expect("pay");
    let now = Utc::now() + chrono::Duration::seconds(1);
    let claim_until = now + chrono::Duration::minutes(2);

    let too_young = store
        .claim_due(
            now,
            unpaid.created_at - chrono::Duration::seconds(1),
            10,
            claim_until,
        )
        .await
        .expect("claim");
    assert!(
        too_young.is_empty(),
        "an order younger than `after` was claimed"
    );

    let first = store
        .claim_due(now, now, 10, claim_until)
        .await
        .expect("claim");
    let numbers: Vec<_> = first.iter().map(|d| d.order.out_trade_no.clone()).collect();
    assert_eq!(
        numbers,
        vec![unpaid.out_trade_no.clone()],
        "only the unsettled order"
    );
    assert_eq!(first[0].attempts, 1);
    assert!(
        store
            .claim_due(now, now, 10, claim_until)
            .await
            .expect("claim")
            .is_empty(),
        "a claimed order was claimed again"
    );

    store
        .schedule_check(&unpaid.out_trade_no, now - chrono::Duration::seconds(1))
        .await
        .expect("schedule");
    let again = store
        .claim_due(now, now, 10, claim_until)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2, "attempts count up");
}

pub async fn concurrent_claims_never_share_an_order(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..20 {
        all.push(
            insert(store.as_ref(), &new_order(100 + i))
                .await
                .out_trade_no,
        );
    }
    let now = Utc::now() + chrono::Duration::seconds(1);
    let until = now + chrono::Duration::minutes(2);
    let claims = futures::future::join_all((0..4).map(|_| {
        let store = store.clone();
        async move { store.claim_due(now, now, 7, until).await.expect("claim") }
    }))
    .await;
    let mut claimed: Vec<_> = claims
        .into_iter()
        .flatten()
        .map(|d| d.order.out_trade_no)
        .collect();
    let count = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), count, "two claims took the same order");
    all.sort();
    assert_eq!(claimed, all, "every due order was claimed by someone");
}

pub async fn one_holder_at_a_time_holds_a_lease(store: Arc<dyn Store>) {
    let long = chrono::Duration::seconds(30);
    assert!(store.try_lease("job", "a", long).await.expect("lease"));
    assert!(
        !store.try_lease("job", "b", long).await.expect("lease"),
        "b took a's lease"
    );
    assert!(
        store.try_lease("job", "a", long).await.expect("lease"),
        "a renews its own"
    );
    assert!(
        store.try_lease("other", "b", long).await.expect("lease"),
        "leases are per name"
    );

    let short = chrono::Duration::milliseconds(50);
    assert!(store.try_lease("brief", "a", short).await.expect("lease"));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        store.try_lease("brief", "b", long).await.expect("lease"),
        "a lease that ran out is taken over"
    );
}

pub async fn retention_deletes_old_audit_rows_and_published_events_only(store: Arc<dyn Store>) {
    let published = insert(store.as_ref(), &new_order(11)).await;
    let pending = insert(store.as_ref(), &new_order(12)).await;
    let TransitionOutcome::Applied { event, .. } = store
        .transition(&pay(&published.out_trade_no, "4200000011"))
        .await
        .expect("pay")
    else {
        panic!("payment not applied");
    };
    store.mark_published(&[event.id]).await.expect("published");
    store
        .transition(&pay(&pending.out_trade_no, "4200000012"))
        .await
        .expect("pay");
    store
        .record_notification(&NotificationRecord {
            kind: "pay".into(),
            out_trade_no: Some(published.out_trade_no.to_string()),
            verdict: "applied".into(),
            raw_body: b"<xml/>".to_vec(),
            sign_type: Some(SignType::Md5),
        })
        .await
        .expect("notification");
    store
        .record_anomaly(&Anomaly {
            kind: AnomalyKind::UnknownOrder,
            out_trade_no: None,
            detail: "old".into(),
        })
        .await
        .expect("anomaly");

    // Nothing is old enough yet.
    let past = Utc::now() - chrono::Duration::days(1);
    assert_eq!(store.purge_before(past, 100).await.expect("purge"), 0);

    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        store.purge_before(later, 100).await.expect("purge"),
        3,
        "the published event, the notification and the anomaly"
    );
    let unpublished = store
        .unpublished_events(Duration::ZERO, 100)
        .await
        .expect("outbox");
    assert_eq!(
        unpublished.len(),
        1,
        "an event not yet published is never deleted"
    );
    assert!(
        store
            .order(&published.out_trade_no)
            .await
            .expect("read")
            .is_some(),
        "orders stay"
    );
}

#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@tests $make;
            inserted_orders_read_back_exactly,
            a_taken_idempotency_key_returns_the_first_order,
            idempotency_keys_are_scoped_to_their_caller,
            prepay_ids_are_recorded,
            each_order_keeps_its_merchant_and_trade_type,
            a_payment_bumps_the_version_and_writes_one_event,
            a_disallowed_transition_changes_nothing,
            a_guarded_transition_moves_only_the_order_it_describes,
            many_orders_read_in_one_call,
            concurrent_duplicate_payments_apply_once,
            the_ledger_marks_every_event_it_published,
            a_transaction_id_belongs_to_one_order,
            transitions_of_unknown_orders_are_not_found,
            the_outbox_hands_out_unpublished_events_until_marked,
            two_relays_at_once_publish_every_event_once,
            a_relay_takes_over_when_the_holders_lease_runs_out,
            notifications_and_anomalies_are_kept,
            notifications_are_kept_in_batches,
            a_verified_payment_wins_over_a_local_close,
            prepay_ids_are_kept_only_for_unpaid_orders,
            due_orders_are_claimed_once_then_when_scheduled,
            concurrent_claims_never_share_an_order,
            one_holder_at_a_time_holds_a_lease,
            retention_deletes_old_audit_rows_and_published_events_only
        );
        $crate::store_suite!(@tests $make; refund_suite;
            partial_refunds_add_up_and_move_the_order_once,
            a_refund_over_what_is_left_is_refused,
            a_refund_number_is_one_refund,
            only_paid_orders_can_be_refunded,
            concurrent_refunds_never_exceed_the_total,
            concurrent_settlements_of_one_refund_apply_once,
            a_contradicting_message_changes_nothing,
            a_refund_made_elsewhere_is_recorded_within_the_total,
            a_refund_id_learned_late_is_kept_and_final_states_stay,
            an_order_takes_at_most_fifty_refunds,
            processing_refunds_are_claimed_for_refundquery,
            a_days_payments_refunds_and_report_are_read_back
        );
        $crate::store_suite!(@tests $make; certificate_suite;
            platform_certificates_are_kept_per_merchant_by_serial,
            a_certificate_downloaded_again_is_replaced_not_duplicated,
            expired_certificates_are_not_read_and_are_deleted_on_save,
            another_merchants_certificate_is_never_kept_as_ours
        );
    };
    (@tests $make:expr; $($name:ident),*) => {
        $crate::store_suite!(@tests $make; suite; $($name),*);
    };
    (@tests $make:expr; $module:ident; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make.await;
                $crate::$module::$name(store).await;
            }
        )*
    };
}
