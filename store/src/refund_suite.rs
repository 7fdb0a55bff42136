//! The refund half of the storage suite (see `suite`): what every backend must
//! do with refunds so that money is never given back twice or beyond what was
//! paid. `store_suite!` runs these beside the order tests.

use std::sync::Arc;

use chrono::Utc;

use crate::{
    suite::new_order, InsertOutcome, RefundOutcome, RefundPlacement, RefundUpdate, Store,
    Transition, TransitionOutcome, MAX_REFUNDS_PER_ORDER,
};
use wxpay_core::domain::{
    EventSource, Fee, NewRefund, Order, OrderStatus, OutRefundNo, OutTradeNo, Refund, RefundReason,
    RefundStatus,
};

/// A paid order of `fee` fen with transaction id `txn-<no>`.
async fn paid_order(store: &dyn Store, fee: i64) -> Order {
    let new = new_order(fee);
    let InsertOutcome::Inserted(order) = store.insert_order(&new).await.expect("insert") else {
        panic!("fresh key taken");
    };
    let t = Transition {
        out_trade_no: order.out_trade_no.clone(),
        to: OrderStatus::Success,
        transaction_id: Some(format!("txn{}", order.out_trade_no)),
        cash_fee: Some(fee),
        paid_at: Some(Utc::now()),
        source: EventSource::Notify,
        guard: None,
    };
    match store.transition(&t).await.expect("pay") {
        TransitionOutcome::Applied { order, .. } => order,
        TransitionOutcome::Unchanged { order } => panic!("not paid: {order:?}"),
    }
}

fn refund_of(order: &Order, no: &str, fee: i64) -> NewRefund {
    NewRefund {
        out_refund_no: OutRefundNo::parse(no).expect("valid refund number"),
        out_trade_no: order.out_trade_no.clone(),
        refund_fee: Fee::for_field("refund_fee", fee).expect("positive"),
        reason: RefundReason::parse("退货").expect("valid reason"),
    }
}

async fn place(store: &dyn Store, r: &NewRefund) -> Refund {
    match store.insert_refund(r).await.expect("insert refund") {
        RefundPlacement::Placed(refund) => refund,
        other => panic!("refund {} not placed: {other:?}", r.out_refund_no),
    }
}

fn settle(refund: &Refund, status: RefundStatus) -> RefundUpdate {
    RefundUpdate {
        out_refund_no: refund.out_refund_no.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        refund_fee: refund.refund_fee,
        refund_id: Some(format!("5000{}", refund.out_refund_no)),
        transaction_id: None,
        total_fee: None,
        status,
        succeeded_at: Some(Utc::now()),
        failure: None,
    }
}

/// A unique refund number for one test (numbers are unique per database).
fn number(tag: &str, order: &Order) -> String {
    format!("{tag}-{}", order.out_trade_no)
}

pub async fn partial_refunds_add_up_and_move_the_order_once(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r1 = place(store.as_ref(), &refund_of(&order, &number("a", &order), 30)).await;
    let r2 = place(store.as_ref(), &refund_of(&order, &number("b", &order), 50)).await;
    assert_eq!(r1.status, RefundStatus::Processing);
    assert_eq!(r1.refund_id, None);

    let RefundOutcome::Applied {
        refund,
        order: after,
        event,
        previous,
    } = store
        .update_refund(&settle(&r1, RefundStatus::Success))
        .await
        .expect("update")
    else {
        panic!("first refund not applied");
    };
    assert_eq!(previous, Some(RefundStatus::Processing));
    assert_eq!(refund.status, RefundStatus::Success);
    assert!(refund.succeeded_at.is_some());
    assert_eq!(after.status, OrderStatus::Refund);
    assert_eq!(after.refunded_fee, 30);
    assert_eq!(after.version, order.version + 1);
    assert_eq!(
        (event.version, event.refunded_fee, event.source),
        (after.version, 30, EventSource::Refund)
    );

    // The same message again changes nothing.
    let again = store
        .update_refund(&settle(&r1, RefundStatus::Success))
        .await
        .expect("update");
    assert!(
        matches!(again, RefundOutcome::Unchanged { .. }),
        "{again:?}"
    );

    let RefundOutcome::Applied { order: after, .. } = store
        .update_refund(&settle(&r2, RefundStatus::Success))
        .await
        .expect("update")
    else {
        panic!("second refund not applied");
    };
    assert_eq!(
        (after.status, after.refunded_fee),
        (OrderStatus::Refund, 80)
    );
    let read = store
        .order(&order.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.refunded_fee, 80);
    let listed = store.refunds_of(&order.out_trade_no).await.expect("list");
    assert_eq!(listed.len(), 2);
}

pub async fn a_refund_over_what_is_left_is_refused(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r1 = place(store.as_ref(), &refund_of(&order, &number("a", &order), 70)).await;
    let over = store
        .insert_refund(&refund_of(&order, &number("b", &order), 31))
        .await
        .expect("insert");
    assert_eq!(over, RefundPlacement::Exceeds { available: 30 });
    // A closed refund gives its money back to the order.
    store
        .update_refund(&settle(&r1, RefundStatus::Closed))
        .await
        .expect("close");
    place(
        store.as_ref(),
        &refund_of(&order, &number("c", &order), 100),
    )
    .await;
    let none_left = store
        .insert_refund(&refund_of(&order, &number("d", &order), 1))
        .await
        .expect("insert");
    assert_eq!(none_left, RefundPlacement::Exceeds { available: 0 });
}

pub async fn a_refund_number_is_one_refund(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let first = refund_of(&order, &number("a", &order), 10);
    let placed = place(store.as_ref(), &first).await;
    let again = store.insert_refund(&first).await.expect("insert");
    assert_eq!(again, RefundPlacement::Existing(placed.clone()));
    // Other fields under the same number: still that refund, for the caller to refuse.
    let other = refund_of(&order, &number("a", &order), 20);
    match store.insert_refund(&other).await.expect("insert") {
        RefundPlacement::Existing(existing) => assert!(!existing.is_same_request(&other)),
        placed => panic!("a second refund under one number: {placed:?}"),
    }
    assert_eq!(
        store
            .refunds_of(&order.out_trade_no)
            .await
            .expect("list")
            .len(),
        1
    );
}

pub async fn only_paid_orders_can_be_refunded(store: Arc<dyn Store>) {
    let new = new_order(100);
    let InsertOutcome::Inserted(unpaid) = store.insert_order(&new).await.expect("insert") else {
        panic!("fresh key taken");
    };
    let r = refund_of(&unpaid, &number("a", &unpaid), 10);
    assert_eq!(
        store.insert_refund(&r).await.expect("insert"),
        RefundPlacement::NotPaid(OrderStatus::NotPay)
    );
    let ghost = NewRefund {
        out_trade_no: OutTradeNo::generate(),
        ..r
    };
    assert_eq!(
        store.insert_refund(&ghost).await.expect("insert"),
        RefundPlacement::OrderNotFound
    );
}

pub async fn concurrent_refunds_never_exceed_the_total(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let r = refund_of(&order, &format!("r{i}-{}", order.out_trade_no), 15);
            tokio::spawn(async move { store.insert_refund(&r).await })
        })
        .collect();
    let mut placed = 0;
    for t in tasks {
        match t.await.expect("task").expect("insert") {
            RefundPlacement::Placed(_) => placed += 1,
            RefundPlacement::Exceeds { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // 6 × 15 = 90 fit in 100; a 7th would make 105.
    assert_eq!(placed, 6);
    let held: i64 = store
        .refunds_of(&order.out_trade_no)
        .await
        .expect("list")
        .iter()
        .map(|r| r.refund_fee.fen())
        .sum();
    assert_eq!(held, 90);
}

pub async fn concurrent_settlements_of_one_refund_apply_once(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r = place(store.as_ref(), &refund_of(&order, &number("a", &order), 40)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let u = settle(&r, RefundStatus::Success);
            tokio::spawn(async move { store.update_refund(&u).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        if let RefundOutcome::Applied { .. } = t.await.expect("task").expect("update") {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    let read = store
        .order(&order.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.refunded_fee, 40);
}

pub async fn a_contradicting_message_changes_nothing(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r = place(store.as_ref(), &refund_of(&order, &number("a", &order), 40)).await;
    let wrong_fee = RefundUpdate {
        refund_fee: Fee::new(41).expect("positive"),
        ..settle(&r, RefundStatus::Success)
    };
    let wrong_txn = RefundUpdate {
        transaction_id: Some("4200000000000000000000000000".into()),
        ..settle(&r, RefundStatus::Success)
    };
    let wrong_total = RefundUpdate {
        total_fee: Some(Fee::new(1000).expect("positive")),
        ..settle(&r, RefundStatus::Success)
    };
    for u in [wrong_fee, wrong_txn, wrong_total] {
        let outcome = store.update_refund(&u).await.expect("update");
        assert!(
            matches!(outcome, RefundOutcome::Mismatch { .. }),
            "{outcome:?}"
        );
    }
    let read = store.refund(&r.out_refund_no).await.expect("read");
    assert_eq!(read, Some(r));
    let order_now = store
        .order(&order.out_trade_no)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (order_now.status, order_now.refunded_fee, order_now.version),
        (OrderStatus::Success, 0, order.version)
    );
}

pub async fn a_refund_made_elsewhere_is_recorded_within_the_total(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let console = |no: &str, fee: i64| RefundUpdate {
        out_refund_no: OutRefundNo::parse(&number(no, &order)).expect("valid"),
        out_trade_no: order.out_trade_no.clone(),
        refund_fee: Fee::new(fee).expect("positive"),
        refund_id: None,
        transaction_id: order.transaction_id.clone(),
        total_fee: Some(order.total_fee),
        status: RefundStatus::Success,
        succeeded_at: None,
        failure: None,
    };
    match store
        .update_refund(&console("c1", 60))
        .await
        .expect("update")
    {
        RefundOutcome::Applied {
            previous, order, ..
        } => {
            assert_eq!(previous, None);
            assert_eq!(order.refunded_fee, 60);
        }
        other => panic!("not recorded: {other:?}"),
    }
    assert_eq!(
        store
            .update_refund(&console("c2", 50))
            .await
            .expect("update"),
        RefundOutcome::Exceeds { available: 40 }
    );
}

pub async fn a_refund_id_learned_late_is_kept_and_final_states_stay(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r = place(store.as_ref(), &refund_of(&order, &number("a", &order), 40)).await;
    // The notification arrives before the reply to the refund request…
    let notified = RefundUpdate {
        refund_id: None,
        ..settle(&r, RefundStatus::Success)
    };
    assert!(matches!(
        store.update_refund(&notified).await.expect("update"),
        RefundOutcome::Applied { .. }
    ));
    // …and the reply (PROCESSING, with WeChat's refund_id) must not undo it.
    let reply = settle(&r, RefundStatus::Processing);
    match store.update_refund(&reply).await.expect("update") {
        RefundOutcome::Unchanged { refund } => {
            assert_eq!(refund.status, RefundStatus::Success);
            assert_eq!(refund.refund_id, reply.refund_id);
        }
        other => panic!("{other:?}"),
    }
    let closed_late = store
        .update_refund(&settle(&r, RefundStatus::Closed))
        .await
        .expect("update");
    assert!(matches!(closed_late, RefundOutcome::Unchanged { .. }));
}

pub async fn an_order_takes_at_most_fifty_refunds(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 1000).await;
    for i in 0..MAX_REFUNDS_PER_ORDER {
        place(
            store.as_ref(),
            &refund_of(&order, &number(&format!("n{i}"), &order), 1),
        )
        .await;
    }
    assert_eq!(
        store
            .insert_refund(&refund_of(&order, &number("last", &order), 1))
            .await
            .expect("insert"),
        RefundPlacement::TooMany
    );
}

pub async fn processing_refunds_are_claimed_for_refundquery(store: Arc<dyn Store>) {
    let order = paid_order(store.as_ref(), 100).await;
    let r1 = place(store.as_ref(), &refund_of(&order, &number("a", &order), 10)).await;
    let r2 = place(store.as_ref(), &refund_of(&order, &number("b", &order), 10)).await;
    store
        .update_refund(&settle(&r2, RefundStatus::Success))
        .await
        .expect("settle");
    let now = Utc::now() + chrono::Duration::seconds(1);
    let later = now + chrono::Duration::minutes(2);
    let due = store
        .claim_due_refunds(now, now, 10, later)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1, "only the PROCESSING refund");
    assert_eq!(due[0].refund.out_refund_no, r1.out_refund_no);
    assert_eq!(due[0].order.out_trade_no, order.out_trade_no);
    assert_eq!(due[0].attempts, 1);
    let again = store
        .claim_due_refunds(now, now, 10, later)
        .await
        .expect("claim");
    assert!(again.is_empty(), "claimed until later");
    store
        .schedule_refund_check(&r1.out_refund_no, now)
        .await
        .expect("schedule");
    let due = store
        .claim_due_refunds(now, now, 10, later)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 2);
}

pub async fn a_days_payments_refunds_and_report_are_read_back(store: Arc<dyn Store>) {
    use wxpay_core::domain::{BillReport, Discrepancy, DiscrepancyKind};
    let order = paid_order(store.as_ref(), 100).await;
    let r = place(store.as_ref(), &refund_of(&order, &number("a", &order), 10)).await;
    store
        .update_refund(&settle(&r, RefundStatus::Success))
        .await
        .expect("settle");
    let from = Utc::now() - chrono::Duration::minutes(1);
    let to = Utc::now() + chrono::Duration::minutes(1);
    let paid = store.orders_paid_between(from, to).await.expect("paid");
    assert!(paid.iter().any(|o| o.out_trade_no == order.out_trade_no));
    let earlier = store
        .orders_paid_between(from - chrono::Duration::days(1), from)
        .await
        .expect("paid");
    assert!(earlier.iter().all(|o| o.out_trade_no != order.out_trade_no));
    let refunds = store
        .refunds_succeeded_between(from, to)
        .await
        .expect("refunds");
    assert!(refunds.iter().any(|x| x.out_refund_no == r.out_refund_no));

    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid");
    assert_eq!(store.bill_report(day).await.expect("read"), None);
    let report = BillReport {
        bill_date: day,
        wechat_rows: 3,
        matched: 1,
        repaired: 1,
        discrepancies: vec![Discrepancy {
            out_trade_no: "T1".into(),
            out_refund_no: String::new(),
            kind: DiscrepancyKind::MissingLocally,
            detail: "微信有，本地无".into(),
        }],
        reconciled_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .expect("valid"),
    };
    store.save_bill_report(&report).await.expect("save");
    assert_eq!(
        store.bill_report(day).await.expect("read"),
        Some(report.clone())
    );
    let again = BillReport {
        matched: 2,
        discrepancies: vec![],
        ..report
    };
    store.save_bill_report(&again).await.expect("replace");
    assert_eq!(store.bill_report(day).await.expect("read"), Some(again));
}
