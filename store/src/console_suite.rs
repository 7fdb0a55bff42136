//! The console half of the storage suite: what every backend's
//! [`ConsoleStore`] must do for the operator console (keyset pages that list
//! each row once, exact search, scopes that hide other merchants, totals, an
//! order's history, anomalies resolved once, the dashboard's figures, the
//! audit log). `console_suite!` turns the list into `#[tokio::test]`s for one
//! backend. Data is made through the [`Store`] API, as the services make it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, DurationRound, NaiveDate, Utc};

use crate::{
    console::{
        AnomalyState, ConsoleStore, NewAuditEntry, OrderCursor, OrderFilter, OrderRow,
        RefundCursor, ResolveOutcome, Scope,
    },
    suite::new_order,
    Anomaly, AnomalyKind, InsertOutcome, NotificationRecord, RefundPlacement, RefundUpdate, Store,
    StoreError, Transition, TransitionOutcome,
};
use wxpay_core::{
    domain::{
        BillReport, Discrepancy, DiscrepancyKind, EventSource, Fee, MerchantName, NewOrder,
        NewRefund, OpenId, Order, OrderStatus, OutRefundNo, OutTradeNo, Refund, RefundReason,
        RefundStatus,
    },
    wechat::SignType,
};

/// What the suite needs of a backend: both traits on one store.
pub trait ConsoleBackend: Store + ConsoleStore {}
impl<T: Store + ConsoleStore> ConsoleBackend for T {}

fn order_for(merchant: &str, fee: i64) -> NewOrder {
    let mut new = new_order(fee);
    new.placement.merchant = MerchantName::parse(merchant).expect("valid merchant");
    new
}

async fn insert(store: &dyn Store, new: &NewOrder) -> Order {
    match store.insert_order(new).await.expect("insert") {
        InsertOutcome::Inserted(o) => o,
        InsertOutcome::KeyTaken(o) => panic!("fresh key reported taken by {}", o.out_trade_no),
    }
}

/// Pays `no` (transaction id `txn<no>`) at `paid_at`.
async fn pay_at(store: &dyn Store, no: &OutTradeNo, paid_at: DateTime<Utc>) -> Order {
    let t = Transition {
        out_trade_no: no.clone(),
        to: OrderStatus::Success,
        transaction_id: Some(txn(no)),
        cash_fee: None,
        paid_at: Some(paid_at),
        source: EventSource::Notify,
        guard: None,
    };
    match store.transition(&t).await.expect("pay") {
        TransitionOutcome::Applied { order, .. } => order,
        TransitionOutcome::Unchanged { order } => panic!("not paid: {order:?}"),
    }
}

fn txn(no: &OutTradeNo) -> String {
    format!("txn{no}")
}

async fn paid(store: &dyn Store, merchant: &str, fee: i64) -> Order {
    let o = insert(store, &order_for(merchant, fee)).await;
    pay_at(store, &o.out_trade_no, Utc::now()).await
}

async fn refund(store: &dyn Store, order: &Order, tag: &str, fee: i64) -> Refund {
    let r = NewRefund {
        out_refund_no: OutRefundNo::parse(&format!("{tag}-{}", order.out_trade_no))
            .expect("valid refund number"),
        out_trade_no: order.out_trade_no.clone(),
        refund_fee: Fee::for_field("refund_fee", fee).expect("positive"),
        reason: RefundReason::parse("退货").expect("valid reason"),
    };
    match store.insert_refund(&r).await.expect("insert refund") {
        RefundPlacement::Placed(refund) => refund,
        other => panic!("refund {} not placed: {other:?}", r.out_refund_no),
    }
}

async fn settle(store: &dyn Store, r: &Refund, status: RefundStatus) {
    store
        .update_refund(&RefundUpdate {
            out_refund_no: r.out_refund_no.clone(),
            out_trade_no: r.out_trade_no.clone(),
            refund_fee: r.refund_fee,
            refund_id: Some(format!("5000{}", r.out_refund_no)),
            transaction_id: None,
            total_fee: None,
            status,
            succeeded_at: Some(Utc::now()),
            failure: None,
        })
        .await
        .expect("settle refund");
}

async fn anomaly(store: &dyn Store, out_trade_no: Option<&str>, detail: &str) {
    store
        .record_anomaly(&Anomaly {
            kind: AnomalyKind::AmountMismatch,
            out_trade_no: out_trade_no.map(str::to_owned),
            detail: detail.to_owned(),
        })
        .await
        .expect("record anomaly");
}

fn only(names: &[&str]) -> Scope {
    Scope::Merchants(names.iter().map(|n| (*n).to_owned()).collect())
}

/// Every order `filter` finds within `scope`, page after page of `limit`.
async fn all_pages<S: ConsoleBackend + ?Sized>(
    store: &S,
    scope: &Scope,
    filter: &OrderFilter,
    limit: u32,
) -> Vec<OrderRow> {
    let mut rows = Vec::new();
    let mut after: Option<OrderCursor> = None;
    for _ in 0..10_000 {
        let page = store
            .search_orders(scope, filter, after.as_ref(), limit)
            .await
            .expect("search");
        assert!(page.rows.len() <= limit as usize, "a page over its limit");
        rows.extend(page.rows);
        match page.next {
            Some(next) => after = Some(next),
            None => return rows,
        }
    }
    panic!("paging never ended");
}

/// The out_trade_nos `filter` finds (one big page), as a set.
async fn found<S: ConsoleBackend + ?Sized>(
    store: &S,
    scope: &Scope,
    filter: &OrderFilter,
) -> HashSet<String> {
    let page = store
        .search_orders(scope, filter, None, 1000)
        .await
        .expect("search");
    assert_eq!(page.next, None);
    page.rows.into_iter().map(|r| r.out_trade_no).collect()
}

fn set(orders: &[&Order]) -> HashSet<String> {
    orders.iter().map(|o| o.out_trade_no.to_string()).collect()
}

pub async fn keyset_pages_list_every_order_once_newest_first<S: ConsoleBackend>(store: Arc<S>) {
    let mut inserted = HashSet::new();
    for i in 0..250 {
        // Many share a millisecond (SQLite's resolution): the out_trade_no
        // tie-break must still give every order one place.
        let merchant = ["shop-a", "shop-b", "shop-c"][i % 3];
        let o = insert(store.as_ref(), &order_for(merchant, 100 + i as i64)).await;
        inserted.insert(o.out_trade_no.to_string());
    }
    for limit in [50, 7, 1000] {
        let rows = all_pages(store.as_ref(), &Scope::All, &OrderFilter::default(), limit).await;
        assert_eq!(rows.len(), 250, "limit {limit}: every order, each once");
        let seen: HashSet<String> = rows.iter().map(|r| r.out_trade_no.clone()).collect();
        assert_eq!(seen, inserted, "limit {limit}");
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                (a.created_at, &a.out_trade_no) > (b.created_at, &b.out_trade_no),
                "limit {limit}: {} listed before {} out of order",
                a.out_trade_no,
                b.out_trade_no
            );
        }
    }
    // The first page is the newest, and says where the next starts.
    let first = store
        .search_orders(&Scope::All, &OrderFilter::default(), None, 10)
        .await
        .expect("page");
    assert_eq!(first.rows.len(), 10);
    let last = first.rows.last().expect("rows");
    assert_eq!(
        first.next,
        Some(OrderCursor {
            created_at: last.created_at,
            out_trade_no: last.out_trade_no.clone(),
        })
    );
    // A filtered listing pages the same way.
    let b = all_pages(
        store.as_ref(),
        &Scope::All,
        &OrderFilter {
            merchant: Some("shop-b".into()),
            ..OrderFilter::default()
        },
        9,
    )
    .await;
    assert_eq!(b.len(), 83);
    assert!(b.iter().all(|r| r.merchant == "shop-b"));
}

pub async fn each_filter_narrows_the_orders<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let mut a = order_for("shop-a", 100);
    a.openid = OpenId::parse("o-payer-a").expect("openid");
    let a = insert(s, &a).await;
    let a = pay_at(s, &a.out_trade_no, Utc::now()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut b = order_for("shop-b", 250);
    b.placement.sub_openid = OpenId::parse("o-sub-b").expect("sub_openid");
    let b = insert(s, &b).await;
    // No payer yet: a NATIVE order's openid is empty.
    let mut c = order_for("shop-a", 999);
    c.openid = OpenId::empty();
    let c = insert(s, &c).await;

    let all = Scope::All;
    let q = |text: &str| OrderFilter {
        q: Some(text.to_owned()),
        ..OrderFilter::default()
    };
    assert_eq!(
        found(s, &all, &q(a.out_trade_no.as_str())).await,
        set(&[&a])
    );
    assert_eq!(found(s, &all, &q(&txn(&a.out_trade_no))).await, set(&[&a]));
    assert_eq!(found(s, &all, &q("o-payer-a")).await, set(&[&a]));
    assert_eq!(found(s, &all, &q("o-sub-b")).await, set(&[&b]));
    // Exact, never a pattern or a prefix.
    for miss in [
        "%",
        "_%",
        &a.out_trade_no.as_str()[..10],
        "o-payer",
        "txn%",
        "",
        "O-PAYER-A",
    ] {
        assert!(
            found(s, &all, &q(miss)).await.is_empty(),
            "q = {miss:?} matched something"
        );
    }

    let by = |f: OrderFilter| async move { found(s, &Scope::All, &f).await };
    assert_eq!(
        by(OrderFilter {
            merchant: Some("shop-a".into()),
            ..Default::default()
        })
        .await,
        set(&[&a, &c])
    );
    assert_eq!(
        by(OrderFilter {
            status: Some("SUCCESS".into()),
            ..Default::default()
        })
        .await,
        set(&[&a])
    );
    assert_eq!(
        by(OrderFilter {
            status: Some("NOTPAY".into()),
            ..Default::default()
        })
        .await,
        set(&[&b, &c])
    );
    assert_eq!(
        by(OrderFilter {
            from: Some(middle),
            ..Default::default()
        })
        .await,
        set(&[&b, &c])
    );
    assert_eq!(
        by(OrderFilter {
            to: Some(middle),
            ..Default::default()
        })
        .await,
        set(&[&a])
    );
    assert_eq!(
        by(OrderFilter {
            min_fee: Some(250),
            ..Default::default()
        })
        .await,
        set(&[&b, &c]),
        "min_fee is inclusive"
    );
    assert_eq!(
        by(OrderFilter {
            max_fee: Some(250),
            ..Default::default()
        })
        .await,
        set(&[&a, &b]),
        "max_fee is inclusive"
    );
    assert_eq!(
        by(OrderFilter {
            min_fee: Some(101),
            max_fee: Some(998),
            ..Default::default()
        })
        .await,
        set(&[&b])
    );
    // Conditions combine.
    assert_eq!(
        by(OrderFilter {
            merchant: Some("shop-a".into()),
            status: Some("NOTPAY".into()),
            ..Default::default()
        })
        .await,
        set(&[&c])
    );
    assert!(by(OrderFilter {
        q: Some(a.out_trade_no.to_string()),
        merchant: Some("shop-b".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    // The row carries what the list shows.
    let page = s
        .search_orders(&all, &q(a.out_trade_no.as_str()), None, 10)
        .await
        .expect("search");
    let row = &page.rows[0];
    assert_eq!(
        (
            row.merchant.as_str(),
            row.status.as_str(),
            row.trade_type.as_str(),
            row.total_fee,
            row.openid.as_str(),
            row.transaction_id.clone(),
            row.created_at,
            row.paid_at
        ),
        (
            "shop-a",
            "SUCCESS",
            "JSAPI",
            100,
            "o-payer-a",
            Some(txn(&a.out_trade_no)),
            a.created_at,
            a.paid_at
        )
    );
}

pub async fn a_scope_hides_other_merchants<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let a = paid(s, "shop-a", 100).await;
    let b = paid(s, "shop-b", 200).await;
    let ra = refund(s, &a, "ra", 10).await;
    let rb = refund(s, &b, "rb", 20).await;
    anomaly(s, Some(a.out_trade_no.as_str()), "about a").await;
    anomaly(s, Some(b.out_trade_no.as_str()), "about b").await;
    anomaly(s, None, "about no order").await;
    anomaly(s, Some("NOSUCHORDER"), "about an order we do not have").await;

    let shop_a = only(&["shop-a"]);
    let none = Scope::Merchants(vec![]);
    let everything = OrderFilter::default();

    assert_eq!(found(s, &shop_a, &everything).await, set(&[&a]));
    assert_eq!(found(s, &Scope::All, &everything).await, set(&[&a, &b]));
    assert_eq!(
        found(s, &only(&["shop-a", "shop-b"]), &everything).await,
        set(&[&a, &b])
    );
    assert!(found(s, &none, &everything).await.is_empty());
    // Searching for b by its number from shop-a's scope finds nothing.
    assert!(found(
        s,
        &shop_a,
        &OrderFilter {
            q: Some(b.out_trade_no.to_string()),
            ..Default::default()
        }
    )
    .await
    .is_empty());
    let totals = s.order_totals(&shop_a, &everything).await.expect("totals");
    assert_eq!((totals.orders, totals.total_fee), (1, 100));
    assert_eq!(
        s.order_totals(&none, &everything)
            .await
            .expect("totals")
            .orders,
        0
    );

    assert!(s
        .order_history(&shop_a, &a.out_trade_no)
        .await
        .expect("history")
        .is_some());
    assert!(
        s.order_history(&shop_a, &b.out_trade_no)
            .await
            .expect("history")
            .is_none(),
        "another merchant's order looks like no order"
    );
    assert!(s
        .order_history(&Scope::All, &b.out_trade_no)
        .await
        .expect("history")
        .is_some());

    let refunds = s.refunds(&shop_a, None, None, 100).await.expect("refunds");
    assert_eq!(
        refunds
            .rows
            .iter()
            .map(|r| r.out_refund_no.as_str())
            .collect::<Vec<_>>(),
        vec![ra.out_refund_no.as_str()]
    );
    assert_eq!(refunds.rows[0].merchant, "shop-a");
    let all_refunds = s
        .refunds(&Scope::All, None, None, 100)
        .await
        .expect("refunds");
    assert_eq!(all_refunds.rows.len(), 2);
    assert!(all_refunds
        .rows
        .iter()
        .any(|r| r.out_refund_no == rb.out_refund_no.as_str() && r.merchant == "shop-b"));
    assert!(s
        .refunds(&none, None, None, 100)
        .await
        .expect("refunds")
        .rows
        .is_empty());

    let listed = s
        .anomalies(&shop_a, AnomalyState::All, None, 100)
        .await
        .expect("anomalies");
    assert_eq!(
        listed.iter().map(|x| x.detail.as_str()).collect::<Vec<_>>(),
        vec!["about a"],
        "no other merchant's, and none about no (known) order"
    );
    assert_eq!(listed[0].merchant.as_deref(), Some("shop-a"));
    let every = s
        .anomalies(&Scope::All, AnomalyState::All, None, 100)
        .await
        .expect("anomalies");
    assert_eq!(
        every
            .iter()
            .map(|x| (x.detail.as_str(), x.merchant.as_deref()))
            .collect::<Vec<_>>(),
        vec![
            ("about an order we do not have", None),
            ("about no order", None),
            ("about b", Some("shop-b")),
            ("about a", Some("shop-a")),
        ],
        "newest first, with the merchant where there is an order"
    );
    let of_b = every[2].id;
    let orphan = every[1].id;
    assert_eq!(s.anomaly(&shop_a, of_b).await.expect("read"), None);
    assert_eq!(s.anomaly(&shop_a, orphan).await.expect("read"), None);
    assert_eq!(
        s.resolve_anomaly(&shop_a, of_b, "mallory", "not mine")
            .await
            .expect("resolve"),
        ResolveOutcome::NotFound
    );
    assert_eq!(
        s.anomaly(&Scope::All, of_b)
            .await
            .expect("read")
            .expect("there")
            .resolution,
        None,
        "a refused resolution writes nothing"
    );
    assert!(s
        .anomalies(&none, AnomalyState::All, None, 100)
        .await
        .expect("anomalies")
        .is_empty());
}

pub async fn totals_count_and_sum_what_the_filter_matches<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let p1 = paid(s, "shop-a", 100).await;
    paid(s, "shop-a", 200).await;
    let p3 = paid(s, "shop-b", 300).await;
    insert(s, &order_for("shop-a", 400)).await;
    insert(s, &order_for("shop-b", 500)).await;
    let r = refund(s, &p3, "r", 50).await;
    settle(s, &r, RefundStatus::Success).await;
    // A refund still in flight gives nothing back yet.
    refund(s, &p1, "r", 30).await;

    let totals = s
        .order_totals(&Scope::All, &OrderFilter::default())
        .await
        .expect("totals");
    assert_eq!(
        (
            totals.orders,
            totals.total_fee,
            totals.paid_orders,
            totals.paid_fee,
            totals.refunded_fee
        ),
        (5, 1500, 3, 600, 50),
        "the REFUND order counts as paid"
    );
    let b = s
        .order_totals(
            &Scope::All,
            &OrderFilter {
                merchant: Some("shop-b".into()),
                ..Default::default()
            },
        )
        .await
        .expect("totals");
    assert_eq!(
        (
            b.orders,
            b.total_fee,
            b.paid_orders,
            b.paid_fee,
            b.refunded_fee
        ),
        (2, 800, 1, 300, 50)
    );
    let none = s
        .order_totals(
            &Scope::All,
            &OrderFilter {
                status: Some("CLOSED".into()),
                ..Default::default()
            },
        )
        .await
        .expect("totals");
    assert_eq!(
        none,
        Default::default(),
        "nothing matched: zeros, not NULLs"
    );
}

pub async fn an_orders_history_has_everything_recorded_about_it<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let mut new = order_for("shop-a", 100);
    new.caller = wxpay_core::domain::Caller::parse("checkout").expect("caller");
    let o = insert(s, &new).await;
    let body = b"<xml><return_code>SUCCESS</return_code></xml>".to_vec();
    s.record_notification(&NotificationRecord {
        kind: "pay".into(),
        out_trade_no: Some(o.out_trade_no.to_string()),
        verdict: "applied".into(),
        raw_body: body.clone(),
        sign_type: Some(SignType::HmacSha256),
    })
    .await
    .expect("notification");
    pay_at(s, &o.out_trade_no, Utc::now()).await;
    let r = refund(s, &o, "r", 40).await;
    settle(s, &r, RefundStatus::Success).await;
    anomaly(s, Some(o.out_trade_no.as_str()), "paid twice?").await;
    // Someone else's rows stay out of it.
    let other = paid(s, "shop-a", 100).await;
    anomaly(s, Some(other.out_trade_no.as_str()), "other").await;

    let h = s
        .order_history(&Scope::All, &o.out_trade_no)
        .await
        .expect("history")
        .expect("there");
    assert_eq!(
        Some(&h.order),
        s.order(&o.out_trade_no).await.expect("read").as_ref()
    );
    assert_eq!(h.order.refunded_fee, 40);
    assert_eq!(h.caller, "checkout");
    assert_eq!(
        h.events
            .iter()
            .map(|e| (
                e.version,
                e.status.as_str(),
                e.source.as_str(),
                e.refunded_fee
            ))
            .collect::<Vec<_>>(),
        vec![(2, "SUCCESS", "NOTIFY", 0), (3, "REFUND", "REFUND", 40)],
        "oldest first"
    );
    assert_eq!(
        h.events[0].transaction_id.as_deref(),
        Some(txn(&o.out_trade_no).as_str())
    );
    assert!(h.events.iter().all(|e| e.published_at.is_none()));
    assert_eq!(h.notifications.len(), 1);
    let n = &h.notifications[0];
    assert_eq!(
        (
            n.kind.as_str(),
            n.verdict.as_str(),
            n.sign_type.as_deref(),
            n.body_bytes
        ),
        ("pay", "applied", Some("HMAC-SHA256"), body.len() as i64)
    );
    assert_eq!(h.refunds.len(), 1);
    let rr = &h.refunds[0];
    assert_eq!(
        (
            rr.out_refund_no.as_str(),
            rr.merchant.as_str(),
            rr.refund_fee,
            rr.status.as_str(),
            rr.reason.as_str()
        ),
        (r.out_refund_no.as_str(), "shop-a", 40, "SUCCESS", "退货")
    );
    assert!(rr.succeeded_at.is_some());
    assert_eq!(
        h.anomalies
            .iter()
            .map(|a| (a.detail.as_str(), a.merchant.as_deref()))
            .collect::<Vec<_>>(),
        vec![("paid twice?", Some("shop-a"))]
    );
    assert!(s
        .order_history(&Scope::All, &OutTradeNo::generate())
        .await
        .expect("history")
        .is_none());
}

pub async fn a_resolved_anomaly_stays_listed_as_resolved<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let o = paid(s, "shop-a", 100).await;
    for i in 0..3 {
        anomaly(s, Some(o.out_trade_no.as_str()), &format!("anomaly {i}")).await;
    }
    let all = s
        .anomalies(&Scope::All, AnomalyState::All, None, 10)
        .await
        .expect("list");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let target = all[1].clone();
    assert_eq!(target.resolution, None);

    let before = Utc::now() - chrono::Duration::seconds(1);
    let outcome = s
        .resolve_anomaly(&only(&["shop-a"]), target.id, "alice", "refunded by hand")
        .await
        .expect("resolve");
    let ResolveOutcome::Resolved(resolution) = outcome else {
        panic!("not resolved: {outcome:?}");
    };
    assert_eq!(resolution.resolved_by, "alice");
    assert_eq!(resolution.note, "refunded by hand");
    assert!(resolution.resolved_at >= before && resolution.resolved_at <= Utc::now());

    let open = s
        .anomalies(&Scope::All, AnomalyState::Open, None, 10)
        .await
        .expect("open");
    assert_eq!(
        open.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![all[0].id, all[2].id]
    );
    let resolved = s
        .anomalies(&Scope::All, AnomalyState::Resolved, None, 10)
        .await
        .expect("resolved");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, target.id);
    assert_eq!(resolved[0].resolution.as_ref(), Some(&resolution));
    let listed = s
        .anomalies(&Scope::All, AnomalyState::All, None, 10)
        .await
        .expect("all");
    assert_eq!(listed.len(), 3, "a resolved anomaly is still listed");
    assert_eq!(listed[1].resolution.as_ref(), Some(&resolution));
    assert_eq!(
        s.anomaly(&Scope::All, target.id)
            .await
            .expect("one")
            .and_then(|a| a.resolution),
        Some(resolution.clone())
    );
    // Paging by id.
    let older = s
        .anomalies(&Scope::All, AnomalyState::All, Some(all[0].id), 1)
        .await
        .expect("older");
    assert_eq!(
        older.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![all[1].id]
    );

    assert_eq!(
        s.resolve_anomaly(&Scope::All, target.id, "bob", "me too")
            .await
            .expect("again"),
        ResolveOutcome::AlreadyResolved(resolution),
        "the first resolution stands"
    );
    assert_eq!(
        s.resolve_anomaly(&Scope::All, all[0].id + 1000, "bob", "?")
            .await
            .expect("unknown"),
        ResolveOutcome::NotFound
    );
}

pub async fn concurrent_resolutions_leave_exactly_one<S: ConsoleBackend>(store: Arc<S>) {
    for round in 0..10 {
        anomaly(store.as_ref(), None, &format!("round {round}")).await;
    }
    let ids: Vec<i64> = store
        .anomalies(&Scope::All, AnomalyState::All, None, 100)
        .await
        .expect("list")
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids.len(), 10);
    for id in ids {
        let resolve = |by: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .resolve_anomaly(&Scope::All, id, by, &format!("note of {by}"))
                    .await
                    .expect("resolve")
            })
        };
        let (x, y) = (resolve("alice"), resolve("bob"));
        let (x, y) = (x.await.expect("task"), y.await.expect("task"));
        let (won, lost) = match (&x, &y) {
            (ResolveOutcome::Resolved(w), ResolveOutcome::AlreadyResolved(l))
            | (ResolveOutcome::AlreadyResolved(l), ResolveOutcome::Resolved(w)) => (w, l),
            _ => panic!("anomaly {id}: {x:?} and {y:?}"),
        };
        assert_eq!(won, lost, "the loser is shown the winner's resolution");
        assert_eq!(won.note, format!("note of {}", won.resolved_by));
        let stored = store
            .anomaly(&Scope::All, id)
            .await
            .expect("read")
            .and_then(|a| a.resolution);
        assert_eq!(stored.as_ref(), Some(won));
    }
}

pub async fn refunds_page_newest_first_each_once<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let mut placed = Vec::new();
    for merchant in ["shop-a", "shop-b", "shop-c"] {
        let o = paid(s, merchant, 10_000).await;
        for i in 0..8 {
            placed.push(refund(s, &o, &format!("r{i}"), 10).await);
        }
    }
    settle(s, &placed[3], RefundStatus::Change).await;
    settle(s, &placed[12], RefundStatus::Success).await;

    let mut rows = Vec::new();
    let mut after: Option<RefundCursor> = None;
    loop {
        let page = s
            .refunds(&Scope::All, None, after.as_ref(), 5)
            .await
            .expect("page");
        assert!(page.rows.len() <= 5);
        rows.extend(page.rows);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(rows.len(), 24);
    let seen: HashSet<&str> = rows.iter().map(|r| r.out_refund_no.as_str()).collect();
    let expected: HashSet<&str> = placed.iter().map(|r| r.out_refund_no.as_str()).collect();
    assert_eq!(seen, expected, "every refund exactly once");
    assert!(rows
        .windows(2)
        .all(|w| (w[0].created_at, &w[0].out_refund_no) > (w[1].created_at, &w[1].out_refund_no)));

    let change = s
        .refunds(&Scope::All, Some("CHANGE"), None, 10)
        .await
        .expect("change");
    assert_eq!(
        change
            .rows
            .iter()
            .map(|r| r.out_refund_no.as_str())
            .collect::<Vec<_>>(),
        vec![placed[3].out_refund_no.as_str()]
    );
    assert_eq!(
        s.refunds(&Scope::All, Some("PROCESSING"), None, 100)
            .await
            .expect("processing")
            .rows
            .len(),
        22
    );
    let c = s
        .refunds(&only(&["shop-c"]), None, None, 100)
        .await
        .expect("c");
    assert_eq!(c.rows.len(), 8);
    assert!(c.rows.iter().all(|r| r.merchant == "shop-c"));
}

pub async fn reconciled_days_are_listed_newest_first<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
    let report = |d: u32, discrepancies: usize| BillReport {
        bill_date: day(d),
        wechat_rows: 10 + u64::from(d),
        matched: 9,
        repaired: 1,
        discrepancies: (0..discrepancies)
            .map(|i| Discrepancy {
                out_trade_no: format!("T{i}"),
                out_refund_no: String::new(),
                kind: DiscrepancyKind::MissingLocally,
                detail: "微信有，本地无".into(),
            })
            .collect(),
        reconciled_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .expect("valid"),
    };
    let reports: Vec<BillReport> = [(20, 0), (21, 2), (22, 1)]
        .into_iter()
        .map(|(d, n)| report(d, n))
        .collect();
    for r in &reports {
        s.save_bill_report(r).await.expect("save");
    }
    let days = s.bill_days(None, 2).await.expect("days");
    assert_eq!(
        days.iter()
            .map(|d| (d.bill_date, d.wechat_rows, d.discrepancies))
            .collect::<Vec<_>>(),
        vec![(day(22), 32, 1), (day(21), 31, 2)]
    );
    assert_eq!((days[0].matched, days[0].repaired), (9, 1));
    assert_eq!(days[0].reconciled_at, reports[2].reconciled_at);
    let older = s.bill_days(Some(day(21)), 10).await.expect("older");
    assert_eq!(
        older.iter().map(|d| d.bill_date).collect::<Vec<_>>(),
        vec![day(20)]
    );
    let one = s.bill_day(day(21)).await.expect("day").expect("there");
    assert_eq!(one.discrepancies.len(), 2);
    assert_eq!(s.bill_day(day(1)).await.expect("day"), None);
}

pub async fn the_dashboard_counts_the_last_day<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let now = Utc::now();
    let hour = now
        .duration_trunc(chrono::Duration::hours(1))
        .expect("truncate");
    let three_ago = hour - chrono::Duration::hours(3);
    let one_ago = hour - chrono::Duration::hours(1);

    let mut paid_orders = Vec::new();
    for (merchant, fee, at) in [
        ("shop-a", 100, three_ago + chrono::Duration::minutes(5)),
        ("shop-b", 200, three_ago + chrono::Duration::minutes(59)),
        ("shop-a", 300, one_ago),
        ("shop-a", 400, now - chrono::Duration::days(2)),
    ] {
        let o = insert(s, &order_for(merchant, fee)).await;
        paid_orders.push(pay_at(s, &o.out_trade_no, at).await);
    }
    insert(s, &order_for("shop-a", 999)).await;
    let (a, b) = (&paid_orders[0], &paid_orders[1]);
    let record = |out_trade_no: Option<String>, verdict: &str| NotificationRecord {
        kind: "pay".into(),
        out_trade_no,
        verdict: verdict.into(),
        raw_body: b"<xml/>".to_vec(),
        sign_type: None,
    };
    s.record_notifications(&[
        record(Some(a.out_trade_no.to_string()), "applied"),
        record(Some(a.out_trade_no.to_string()), "duplicate"),
        record(Some(a.out_trade_no.to_string()), "duplicate"),
        record(None, "bad_signature"),
    ])
    .await
    .expect("notifications");
    anomaly(s, Some(a.out_trade_no.as_str()), "open, a").await;
    anomaly(s, None, "open, nobody's").await;
    anomaly(s, Some(a.out_trade_no.as_str()), "resolved, a").await;
    let newest = s
        .anomalies(&Scope::All, AnomalyState::All, None, 1)
        .await
        .expect("list");
    s.resolve_anomaly(&Scope::All, newest[0].id, "alice", "done")
        .await
        .expect("resolve");
    let change = refund(s, a, "change", 10).await;
    settle(s, &change, RefundStatus::Change).await;
    refund(s, a, "processing", 10).await;
    refund(s, b, "processing", 10).await;

    let since = now - chrono::Duration::hours(24);
    let d = s.dashboard(&Scope::All, since).await.expect("dashboard");
    assert_eq!(
        d.paid_per_hour
            .iter()
            .map(|h| (h.hour, h.orders, h.fee))
            .collect::<Vec<_>>(),
        vec![(three_ago, 2, 300), (one_ago, 1, 300)],
        "by the UTC hour of payment, the payment of two days ago left out"
    );
    assert_eq!(
        d.verdicts
            .iter()
            .map(|v| (v.kind.as_str(), v.verdict.as_str(), v.count))
            .collect::<Vec<_>>(),
        vec![
            ("pay", "applied", 1),
            ("pay", "bad_signature", 1),
            ("pay", "duplicate", 2)
        ]
    );
    // Nothing was published: every event of the day is still in the outbox.
    let events: i64 = d.outbox_per_hour.iter().map(|h| h.events).sum();
    assert_eq!(events, d.outbox.count);
    assert!(events >= 4, "four payments at least: {events}");
    for h in &d.outbox_per_hour {
        assert!(
            h.max_delay_ms >= 0 && h.max_delay_ms < 600_000,
            "{h:?}: delayed since the test began, no more"
        );
    }
    assert_eq!(d.open_anomalies, 2);
    assert_eq!((d.refunds_change, d.refunds_processing), (1, 2));

    let a_only = s
        .dashboard(&only(&["shop-a"]), since)
        .await
        .expect("dashboard");
    assert_eq!(
        a_only
            .paid_per_hour
            .iter()
            .map(|h| (h.hour, h.orders, h.fee))
            .collect::<Vec<_>>(),
        vec![(three_ago, 1, 100), (one_ago, 1, 300)]
    );
    assert_eq!(
        a_only
            .verdicts
            .iter()
            .map(|v| (v.verdict.as_str(), v.count))
            .collect::<Vec<_>>(),
        vec![("applied", 1), ("duplicate", 2)],
        "notifications about no order of shop-a's are not shop-a's"
    );
    assert_eq!(a_only.open_anomalies, 1);
    assert_eq!((a_only.refunds_change, a_only.refunds_processing), (1, 1));
    let a_events: i64 = a_only.outbox_per_hour.iter().map(|h| h.events).sum();
    assert!(a_events < events, "shop-b's events are not shop-a's");

    let later = s
        .dashboard(&Scope::All, now + chrono::Duration::hours(1))
        .await
        .expect("dashboard");
    assert!(later.paid_per_hour.is_empty());
    assert!(later.verdicts.is_empty());
    assert!(later.outbox_per_hour.is_empty());
}

pub async fn audit_entries_are_begun_then_finished_once<S: ConsoleBackend>(store: Arc<S>) {
    let s = store.as_ref();
    let entry = |action: &str, target: &str| NewAuditEntry {
        actor: "alice".into(),
        role: "operator".into(),
        action: action.into(),
        target: target.into(),
        fields: r#"{"refund_fee":"100","reason":"退货"}"#.into(),
    };
    let before = Utc::now() - chrono::Duration::seconds(1);
    let first = s.begin_audit(&entry("refund", "T1")).await.expect("begin");
    let second = s.begin_audit(&entry("close", "T2")).await.expect("begin");
    assert!(second > first);

    let log = s.audit(None, 10).await.expect("audit");
    assert_eq!(
        log.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![second, first]
    );
    let e = &log[1];
    assert_eq!(
        (
            e.actor.as_str(),
            e.role.as_str(),
            e.action.as_str(),
            e.target.as_str(),
            e.fields.as_str()
        ),
        (
            "alice",
            "operator",
            "refund",
            "T1",
            r#"{"refund_fee":"100","reason":"退货"}"#
        )
    );
    assert!(e.at >= before);
    assert_eq!((e.result.clone(), e.ok, e.finished_at), (None, None, None));

    s.finish_audit(first, true, "refund R1 placed")
        .await
        .expect("finish");
    s.finish_audit(second, false, "WeChat said ORDERPAID")
        .await
        .expect("finish");
    let log = s.audit(None, 10).await.expect("audit");
    assert_eq!(
        (log[1].ok, log[1].result.as_deref()),
        (Some(true), Some("refund R1 placed"))
    );
    assert_eq!(
        (log[0].ok, log[0].result.as_deref()),
        (Some(false), Some("WeChat said ORDERPAID"))
    );
    let finished = log[1].finished_at.expect("finished");
    assert!(finished >= log[1].at);

    assert!(
        matches!(
            s.finish_audit(first, false, "rewritten").await,
            Err(StoreError::Conflict(_))
        ),
        "a finished entry is not rewritten"
    );
    assert_eq!(
        s.audit(Some(second), 10).await.expect("audit")[0]
            .result
            .as_deref(),
        Some("refund R1 placed")
    );
    assert!(matches!(
        s.finish_audit(second + 1000, true, "?").await,
        Err(StoreError::NotFound)
    ));
    // An order's own actions, oldest first, the newest `limit` of them.
    let third = s.begin_audit(&entry("query", "T1")).await.expect("begin");
    let of_t1 = s.audit_of("T1", 10).await.expect("audit_of");
    assert_eq!(
        of_t1.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first, third]
    );
    assert_eq!(s.audit_of("T1", 1).await.expect("audit_of")[0].id, third);
    assert!(s.audit_of("T9", 10).await.expect("audit_of").is_empty());
}

/// Expands to one `#[tokio::test]` per console suite function, each on a fresh
/// store made by `$make` (an async expression returning `Arc<S>` for an `S`
/// implementing both `Store` and `ConsoleStore`).
#[macro_export]
macro_rules! console_suite {
    ($make:expr) => {
        $crate::console_suite!(@tests $make;
            keyset_pages_list_every_order_once_newest_first,
            each_filter_narrows_the_orders,
            a_scope_hides_other_merchants,
            totals_count_and_sum_what_the_filter_matches,
            an_orders_history_has_everything_recorded_about_it,
            a_resolved_anomaly_stays_listed_as_resolved,
            concurrent_resolutions_leave_exactly_one,
            refunds_page_newest_first_each_once,
            reconciled_days_are_listed_newest_first,
            the_dashboard_counts_the_last_day,
            audit_entries_are_begun_then_finished_once
        );
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make.await;
                $crate::console_suite::$name(store).await;
            }
        )*
    };
}
