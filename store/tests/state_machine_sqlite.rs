//! The state-machine model test of `core/tests/state_machine_model.rs`, for
//! real: the same random sequences of WeChat messages about one order
//! (payment notifications paid / wrong amount / failed, re-deliveries,
//! `orderquery` answers, `closeorder` answers for CloseOrder and for expiry)
//! go through the product's decision and then through
//! `SqliteStore::transition` on a fresh in-memory database with one order made
//! by `wxpay_store::suite::new_order`. The core test checks the rules; this one
//! checks that the store applies them: `Applied` / `Unchanged` as the model
//! says, the `previous` status it reports (how a payment after a close is
//! recognised as an anomaly), one version and exactly one outbox row per
//! accepted change (the outbox is counted after every step), versions
//! strictly increasing, the returned event matching the row, and the order
//! read back equal to the one returned. Same invariants as the core test: a
//! paid order is never shown unpaid, never two transitions for one payment, a
//! wrong-amount payment changes nothing, a verified payment always wins.
//!
//! Fewer cases ([`CASES`]) than the core test: every step is a database round trip.
//!
//! The test can fail: the store is checked against the model, not against
//! itself. Were the store's UPDATE to ignore `allowed_from` (or test it after
//! writing), to bump the version or write an event on a refused move, or to
//! report the new status as `previous`, the first sequence that hits it fails
//! with the message named in [`Checker::check`]; the core test shows with
//! broken transition rules that the same checks catch them.
//!
//! The part between the `MODEL` markers is a copy of the core test's (a test
//! crate cannot import another crate's tests); keep them in step.

use std::{cell::RefCell, collections::BTreeMap, time::Duration};

use chrono::Utc;
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use wxpay_core::domain::{EventSource, Order, OrderStatus};
use wxpay_store::{
    suite::new_order, InsertOutcome, SqliteStore, Store, Transition, TransitionOutcome,
};

// ---- MODEL: identical in core/tests/state_machine_model.rs and store/tests/state_machine_sqlite.rs ----

/// Whether a reported amount is the order's `total_fee` (in CNY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amount {
    Right,
    Wrong,
}

/// One authenticated message from WeChat about the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// A pay notification with `result_code=SUCCESS` (the gateway).
    Paid { txn: u8, amount: Amount },
    /// A pay notification with `result_code=FAIL` (the gateway).
    Failed { amount: Amount },
    /// An `orderquery` answer (QueryOrder, the poller, the reconciler);
    /// `txn` and `amount` matter for SUCCESS (and `txn` for REFUND).
    Query {
        state: OrderStatus,
        txn: u8,
        amount: Amount,
    },
    /// A merchant's CloseOrder, with WeChat's `closeorder` answer.
    Close(CloseAnswer),
    /// The reconciler closing an expired order, with WeChat's `closeorder` answer.
    Expire(CloseAnswer),
}

/// What `closeorder` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseAnswer {
    /// Closed (or already closed, or never seen): the order closes locally.
    Closed,
    /// ORDERPAID: the product asks `orderquery`, which answers SUCCESS with these.
    OrderPaid { txn: u8, amount: Amount },
}

#[derive(Debug, Clone)]
enum Step {
    Fresh(Report),
    /// WeChat delivers an earlier message of the sequence again.
    Again(Index),
}

/// A transition the product asks the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    to: OrderStatus,
    txn: Option<u8>,
    source: EventSource,
}

/// What the implementation did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The product asked for no transition.
    NotAsked,
    Applied {
        previous: OrderStatus,
    },
    Unchanged,
}

/// The order as the implementation shows it after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: OrderStatus,
    version: i64,
    /// Outbox events written for the order.
    events: usize,
    txn: Option<u8>,
    paid_at: bool,
}

impl Seen {
    fn new_order() -> Self {
        Seen {
            status: OrderStatus::NotPay,
            version: 1,
            events: 0,
            txn: None,
            paid_at: false,
        }
    }
}

/// The product's decision, mirroring `gateway/src/payment.rs` (`settle`: the
/// amount must be the order's, then SUCCESS with the transaction id or PAYERROR)
/// and `payment-service/src/service/settle.rs` (`query_order`, `close_order`,
/// `expire_order`): given a message and the stored status, the transition it
/// asks for, if any.
fn product_request(report: Report, status: OrderStatus) -> Option<Request> {
    use OrderStatus::*;
    match report {
        Report::Paid {
            amount: Amount::Wrong,
            ..
        }
        | Report::Failed {
            amount: Amount::Wrong,
        } => None,
        Report::Paid { txn, .. } => Some(Request {
            to: Success,
            txn: Some(txn),
            source: EventSource::Notify,
        }),
        Report::Failed { .. } => Some(Request {
            to: PayError,
            txn: None,
            source: EventSource::Notify,
        }),
        Report::Query { state, txn, amount } => query_order(status, state, txn, amount),
        // CloseOrder: CLOSED is done already; SUCCESS, REFUND and REVOKED are
        // refused before WeChat is asked.
        Report::Close(answer) => match status {
            NotPay | UserPaying | PayError => close_at_wechat(status, answer),
            Success | Closed | Refund | Revoked => None,
        },
        // The reconciler's expiry: only an unsettled order is closed.
        Report::Expire(answer) if status.is_unsettled() => close_at_wechat(status, answer),
        Report::Expire(_) => None,
    }
}

fn query_order(
    status: OrderStatus,
    state: OrderStatus,
    txn: u8,
    amount: Amount,
) -> Option<Request> {
    use OrderStatus::*;
    if status == Refund || state == status || (state == Success && amount == Amount::Wrong) {
        return None;
    }
    Some(Request {
        to: state,
        txn: matches!(state, Success | Refund).then_some(txn),
        source: EventSource::Query,
    })
}

fn close_at_wechat(status: OrderStatus, answer: CloseAnswer) -> Option<Request> {
    match answer {
        CloseAnswer::Closed => Some(Request {
            to: OrderStatus::Closed,
            txn: None,
            source: EventSource::Close,
        }),
        CloseAnswer::OrderPaid { txn, amount } => {
            query_order(status, OrderStatus::Success, txn, amount)
        }
    }
}

/// The reference model: the rules of issue #10 in words, not `allowed_from`'s table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    status: OrderStatus,
    version: i64,
    events: usize,
    txn: Option<u8>,
    paid: bool,
}

impl Model {
    fn new() -> Self {
        Model {
            status: OrderStatus::NotPay,
            version: 1,
            events: 0,
            txn: None,
            paid: false,
        }
    }

    fn accepts(&self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        match (self.status, to) {
            // Nothing moves to where it is, and nothing goes back to "not paid yet".
            (from, to) if from == to => false,
            (_, NotPay) => false,
            // A refund is the end; a paid order can only be refunded.
            (Refund, _) => false,
            (Success, to) => to == Refund,
            // WeChat's word on money wins over every unpaid state.
            (_, Success) => true,
            // Only a paid order is refunded.
            (_, Refund) => false,
            // An order nobody has decided yet may go anywhere else.
            (NotPay | UserPaying, _) => true,
            // A failed attempt is not final: the payer may pay (above) or the order expires.
            (PayError, to) => to == Closed,
            // Closed or revoked: only a payment (above) moves it.
            (Closed | Revoked, _) => false,
        }
    }

    fn apply(&mut self, r: Request) -> Outcome {
        if !self.accepts(r.to) {
            return Outcome::Unchanged;
        }
        let previous = self.status;
        self.status = r.to;
        self.version += 1;
        self.events += 1;
        // A change records the transaction id it carries and keeps the one it does not.
        self.txn = r.txn.or(self.txn);
        self.paid |= r.to == OrderStatus::Success;
        Outcome::Applied { previous }
    }

    fn seen(&self) -> Seen {
        Seen {
            status: self.status,
            version: self.version,
            events: self.events,
            txn: self.txn,
            paid_at: self.paid,
        }
    }
}

/// What one run exercised.
#[derive(Debug, Default)]
struct Coverage {
    cases: u64,
    steps: u64,
    redeliveries: u64,
    wrong_amounts: u64,
    /// Accepted changes, `previous -> to`.
    edges: BTreeMap<(&'static str, &'static str), u64>,
    refused: u64,
}

/// Follows one order through a sequence: the model, and what was seen so far.
struct Checker {
    model: Model,
    seen: Seen,
    /// Each message delivered so far, and whether that delivery changed the order.
    history: Vec<(Report, bool)>,
    /// The transaction id of the applied payment.
    paid_txn: Option<Option<u8>>,
}

impl Checker {
    fn new() -> Self {
        Checker {
            model: Model::new(),
            seen: Seen::new_order(),
            history: Vec::new(),
            paid_txn: None,
        }
    }

    /// The message a step delivers (the first step is always fresh).
    fn report(&self, step: &Step) -> Report {
        match step {
            Step::Fresh(r) => *r,
            Step::Again(i) => i.get(&self.history).0,
        }
    }

    /// Checks one step: the implementation was shown `report` on the order
    /// `self.seen`, the product asked for `request`, and the implementation
    /// answered `outcome` and now shows `after`.
    fn check(
        &mut self,
        step: &Step,
        report: Report,
        request: Option<Request>,
        outcome: Outcome,
        after: Seen,
        cov: &mut Coverage,
    ) -> Result<(), TestCaseError> {
        use OrderStatus::*;
        let before = std::mem::replace(&mut self.seen, after.clone());
        let ctx = format!("{report:?} on {before:?}, request {request:?}");

        // The invariants first, on what the implementation showed alone; then
        // the reference model, which also pins down every refusal.
        let applied = matches!(outcome, Outcome::Applied { .. });
        match outcome {
            Outcome::Applied { previous } => {
                prop_assert_eq!(previous, before.status, "reported previous, {}", ctx);
                prop_assert_eq!(after.version, before.version + 1, "version, {}", ctx);
                prop_assert_eq!(after.events, before.events + 1, "outbox, {}", ctx);
                *cov.edges
                    .entry((previous.as_str(), after.status.as_str()))
                    .or_default() += 1;
            }
            Outcome::Unchanged | Outcome::NotAsked => {
                prop_assert_eq!(
                    &after,
                    &before,
                    "a refused message changed the order: {}",
                    ctx
                );
                cov.refused += u64::from(outcome == Outcome::Unchanged);
            }
        }
        if applied && after.status == Success {
            prop_assert!(
                self.paid_txn.is_none(),
                "a second transition to SUCCESS: {}",
                ctx
            );
            self.paid_txn = Some(after.txn);
        }
        if let Some(txn) = self.paid_txn {
            prop_assert!(
                matches!(after.status, Success | Refund),
                "a paid order is shown {}: {}",
                after.status,
                ctx
            );
            prop_assert!(after.paid_at, "a paid order lost paid_at: {}", ctx);
            if after.status == Success {
                prop_assert_eq!(after.txn, txn, "the payment's transaction id, {}", ctx);
            }
        }
        if wrong_amount(report) {
            cov.wrong_amounts += 1;
            prop_assert!(
                !applied,
                "a wrong-amount payment changed the order: {}",
                ctx
            );
        }
        if let Step::Again(_) = step {
            cov.redeliveries += 1;
        }
        if applied
            && self
                .history
                .iter()
                .any(|(earlier, changed)| *earlier == report && *changed)
        {
            return Err(TestCaseError::fail(format!(
                "a message changed the order a second time: {ctx}"
            )));
        }
        if let Some(Request { to: Success, .. }) = request {
            if !matches!(before.status, Success | Refund) {
                prop_assert_eq!(
                    outcome,
                    Outcome::Applied {
                        previous: before.status
                    },
                    "a verified payment lost: {}",
                    ctx
                );
            }
        }
        let expected = match request {
            None => Outcome::NotAsked,
            Some(r) => self.model.apply(r),
        };
        prop_assert_eq!(outcome, expected, "outcome (model) of {}", ctx);
        prop_assert_eq!(&after, &self.model.seen(), "order (model) after {}", ctx);
        self.history.push((report, applied));
        cov.steps += 1;
        Ok(())
    }
}

/// A payment report (or a SUCCESS answer) whose amount is not the order's.
fn wrong_amount(report: Report) -> bool {
    let wrong = Amount::Wrong;
    match report {
        Report::Paid { amount, .. } | Report::Failed { amount } => amount == wrong,
        Report::Query { state, amount, .. } => state == OrderStatus::Success && amount == wrong,
        Report::Close(CloseAnswer::OrderPaid { amount, .. })
        | Report::Expire(CloseAnswer::OrderPaid { amount, .. }) => amount == wrong,
        Report::Close(CloseAnswer::Closed) | Report::Expire(CloseAnswer::Closed) => false,
    }
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![4 => Just(Amount::Right), 1 => Just(Amount::Wrong)]
}

/// A few transaction ids, so that a second, different payment report happens.
fn txn() -> impl Strategy<Value = u8> {
    0u8..3
}

fn close_answer() -> impl Strategy<Value = CloseAnswer> {
    prop_oneof![
        3 => Just(CloseAnswer::Closed),
        1 => (txn(), amount()).prop_map(|(txn, amount)| CloseAnswer::OrderPaid { txn, amount }),
    ]
}

fn report() -> impl Strategy<Value = Report> {
    prop_oneof![
        4 => (txn(), amount()).prop_map(|(txn, amount)| Report::Paid { txn, amount }),
        2 => amount().prop_map(|amount| Report::Failed { amount }),
        6 => (proptest::sample::select(OrderStatus::ALL.to_vec()), txn(), amount())
            .prop_map(|(state, txn, amount)| Report::Query { state, txn, amount }),
        2 => close_answer().prop_map(Report::Close),
        2 => close_answer().prop_map(Report::Expire),
    ]
}

/// 1 to 29 messages, the first never a re-delivery.
fn sequence() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => report().prop_map(Step::Fresh),
        1 => any::<Index>().prop_map(Step::Again),
    ];
    (report(), proptest::collection::vec(step, 0..29))
        .prop_map(|(first, rest)| std::iter::once(Step::Fresh(first)).chain(rest).collect())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The minimal failing case is printed; nothing is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every move the state machine allows, as `(from, to)`.
fn allowed_edges() -> Vec<(&'static str, &'static str)> {
    let mut edges = Vec::new();
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            if from.can_become(to) {
                edges.push((from.as_str(), to.as_str()));
            }
        }
    }
    edges
}

// ---- end of MODEL ----

const FEE: i64 = 101;

/// Sequences per run: every step is a few database round trips (a case takes
/// about 7 ms in debug, with a fresh database each).
const CASES: u32 = 500;

/// The transaction id WeChat gives payment `k` (one order per database, so no reuse).
fn txn_id(k: u8) -> String {
    format!("42000000012026{k:014}")
}

fn txn_index(id: &str) -> Result<u8, TestCaseError> {
    id.strip_prefix("42000000012026")
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("unexpected transaction id {id}")))
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// The order as stored, with its outbox rows counted.
async fn seen(store: &SqliteStore, order: &Order) -> Result<Seen, TestCaseError> {
    let events = store
        .unpublished_events(Duration::ZERO, 1_000)
        .await
        .map_err(fail)?;
    prop_assert!(events.iter().all(|e| e.out_trade_no == order.out_trade_no));
    Ok(Seen {
        status: order.status,
        version: order.version,
        events: events.len(),
        txn: order.transaction_id.as_deref().map(txn_index).transpose()?,
        paid_at: order.paid_at.is_some(),
    })
}

async fn run_sequence(steps: &[Step], cov: &mut Coverage) -> Result<(), TestCaseError> {
    let store = SqliteStore::in_memory().await.map_err(fail)?;
    let new = new_order(FEE);
    let InsertOutcome::Inserted(mut order) = store.insert_order(&new).await.map_err(fail)? else {
        return Err(fail("a fresh idempotency key was reported taken"));
    };
    let no = new.out_trade_no.clone();
    let mut checker = Checker::new();
    prop_assert_eq!(&seen(&store, &order).await?, &checker.seen);
    for step in steps {
        let report = checker.report(step);
        // The product reads the order, then decides.
        let stored = store
            .order(&no)
            .await
            .map_err(fail)?
            .ok_or_else(|| fail("order vanished"))?;
        prop_assert_eq!(&stored, &order, "the order changed between two messages");
        let request = product_request(report, stored.status);
        let outcome = match request {
            None => Outcome::NotAsked,
            Some(r) => {
                let t = Transition {
                    out_trade_no: no.clone(),
                    to: r.to,
                    transaction_id: r.txn.map(txn_id),
                    cash_fee: r.txn.map(|_| FEE),
                    paid_at: (r.to == OrderStatus::Success).then(Utc::now),
                    source: r.source,
                    guard: None,
                };
                match store.transition(&t).await.map_err(fail)? {
                    TransitionOutcome::Applied {
                        order: changed,
                        event,
                        previous,
                    } => {
                        prop_assert_eq!(&event.out_trade_no, &no);
                        prop_assert_eq!(event.status, changed.status);
                        prop_assert_eq!(event.status, r.to);
                        prop_assert_eq!(event.version, changed.version);
                        prop_assert_eq!(&event.transaction_id, &changed.transaction_id);
                        prop_assert_eq!(event.total_fee, changed.total_fee);
                        prop_assert_eq!(event.source, r.source);
                        order = changed;
                        Outcome::Applied { previous }
                    }
                    TransitionOutcome::Unchanged { order: same } => {
                        order = same;
                        Outcome::Unchanged
                    }
                }
            }
        };
        prop_assert_eq!(order.total_fee.fen(), FEE);
        let after = seen(&store, &order).await?;
        checker.check(step, report, request, outcome, after, cov)?;
    }
    // The outbox holds the accepted changes in order, versions 2, 3, …
    let events = store
        .unpublished_events(Duration::ZERO, 1_000)
        .await
        .map_err(fail)?;
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<i64> = (2..=checker.model.version).collect();
    prop_assert_eq!(versions, expected, "outbox versions");
    prop_assert_eq!(
        events.last().map(|e| e.status),
        (checker.model.events > 0).then_some(checker.model.status)
    );
    store.close().await;
    cov.cases += 1;
    Ok(())
}

#[test]
fn the_sqlite_store_agrees_with_the_model() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cov = RefCell::new(Coverage::default());
    TestRunner::new(config(CASES))
        .run(&sequence(), |steps| {
            rt.block_on(run_sequence(&steps, &mut cov.borrow_mut()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let cov = cov.into_inner();
    eprintln!("{cov:?}");
    assert!(cov.cases >= u64::from(CASES), "{} cases", cov.cases);
    // The paths issue #10 is about were taken through the database.
    for edge in [
        ("PAYERROR", "SUCCESS"),
        ("CLOSED", "SUCCESS"),
        ("NOTPAY", "SUCCESS"),
    ] {
        assert!(
            cov.edges.get(&edge).copied().unwrap_or(0) > 0,
            "{} -> {} was never exercised",
            edge.0,
            edge.1
        );
    }
    let exercised = allowed_edges()
        .into_iter()
        .filter(|e| cov.edges.contains_key(e))
        .count();
    eprintln!(
        "{exercised} of {} allowed moves exercised",
        allowed_edges().len()
    );
}
