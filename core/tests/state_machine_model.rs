//! Model-based property test of the order state machine (issue #10, "Tests").
//!
//! Each case is a random sequence (1 to 29 steps) of what WeChat can tell the
//! product about one order: payment notifications (paid with a transaction id,
//! paid with the wrong amount, failed), re-deliveries of an earlier message of
//! the sequence, `orderquery` answers (every `trade_state`), and `closeorder`
//! answers, both for a merchant's CloseOrder and for the reconciler's expiry
//! (WeChat agrees and the order is closed locally, or says ORDERPAID and the
//! payment is queried instead). Each message goes through a copy of the
//! product's decision ([`product_request`]: which transition the gateway or
//! payment-service asks for, if any) and then through the state machine as the
//! stores apply it: `OrderStatus::can_become`, one version and one outbox event
//! per accepted change. 10,000 cases a run, new random ones every run.
//!
//! Every step is compared with a small reference model ([`Model`]) that states
//! the business rules instead of copying `allowed_from`'s table, and with
//! invariants that must hold whatever the model says:
//! - a paid order is never shown unpaid: once a verified payment of the right
//!   amount was applied, the status is SUCCESS or REFUND for good;
//! - never two transitions for one payment: at most one change to SUCCESS per
//!   order, and a message that already changed the order never changes it again;
//! - versions strictly increase: +1 and one outbox event per accepted change,
//!   and nothing at all changes otherwise;
//! - a wrong-amount payment never changes anything;
//! - a verified payment always wins: from NOTPAY, USERPAYING, PAYERROR, CLOSED
//!   or REVOKED it becomes SUCCESS, reporting the status it replaced (so a
//!   payment after a close can be recorded as an anomaly).
//!
//! The test can fail: `a_broken_state_machine_is_caught` runs the same
//! property against deliberately broken transition rules (among them the one
//! issue #10 fixed: PAYERROR final, CLOSED and REVOKED never paid) and expects
//! each to be caught. Bumping the version on a refused move would trip the
//! "nothing changes" check the same way.
//!
//! `store/tests/state_machine_sqlite.rs` applies the same sequences through
//! SQLite; the part between the `MODEL` markers is identical in both files (a
//! test crate cannot import another crate's tests), keep them in step.
//!
//! A failing run prints the minimal failing sequence; `PROPTEST_RNG_SEED=<n>`
//! replays a run. No regression file is written into the source tree.

use std::{cell::RefCell, collections::BTreeMap};

use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use wxpay_core::domain::{EventSource, OrderStatus};

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

/// The state machine as the stores apply it: one conditional change, its
/// version bump and its outbox event, decided by `can_become`.
struct StateMachine {
    can_become: fn(OrderStatus, OrderStatus) -> bool,
    order: Seen,
}

impl StateMachine {
    fn transition(&mut self, r: Request) -> Outcome {
        let o = &mut self.order;
        if !(self.can_become)(o.status, r.to) {
            return Outcome::Unchanged;
        }
        let previous = o.status;
        o.status = r.to;
        o.version += 1;
        o.events += 1;
        o.txn = r.txn.or(o.txn);
        o.paid_at |= r.to == OrderStatus::Success;
        Outcome::Applied { previous }
    }
}

fn run_sequence(
    steps: &[Step],
    can_become: fn(OrderStatus, OrderStatus) -> bool,
    cov: &mut Coverage,
) -> Result<(), TestCaseError> {
    let mut machine = StateMachine {
        can_become,
        order: Seen::new_order(),
    };
    let mut checker = Checker::new();
    for step in steps {
        let report = checker.report(step);
        let request = product_request(report, machine.order.status);
        let outcome = match request {
            None => Outcome::NotAsked,
            Some(r) => machine.transition(r),
        };
        checker.check(step, report, request, outcome, machine.order.clone(), cov)?;
    }
    cov.cases += 1;
    Ok(())
}

/// Runs `cases` random sequences against `can_become`; the minimal failing
/// sequence, if any, as the error.
fn run(can_become: fn(OrderStatus, OrderStatus) -> bool, cases: u32) -> Result<Coverage, String> {
    let cov = RefCell::new(Coverage::default());
    TestRunner::new(config(cases))
        .run(&sequence(), |steps| {
            run_sequence(&steps, can_become, &mut cov.borrow_mut())
        })
        .map_err(|e| e.to_string())?;
    Ok(cov.into_inner())
}

#[test]
fn the_state_machine_agrees_with_the_model() {
    let cov = run(OrderStatus::can_become, 10_000).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{cov:?}");
    assert!(cov.cases >= 10_000, "{} cases", cov.cases);
    // The generator reaches every move the state machine allows, so each was checked.
    for edge in allowed_edges() {
        assert!(
            cov.edges.get(&edge).copied().unwrap_or(0) > 0,
            "{} -> {} was never exercised",
            edge.0,
            edge.1
        );
    }
    assert!(cov.redeliveries > 0 && cov.wrong_amounts > 0 && cov.refused > 0);
}

/// The property is not vacuous: each broken rule below is caught, by the
/// check named with it (the invariants catch what issue #10 is about without
/// help from the model; the model catches the refusals no invariant names).
#[test]
fn a_broken_state_machine_is_caught() {
    use OrderStatus::*;
    type Rule = fn(OrderStatus, OrderStatus) -> bool;
    let mutants: [(&str, Rule, &[&str]); 5] = [
        (
            "before issue 10: PAYERROR is final, CLOSED and REVOKED are never paid",
            |from, to| {
                from.can_become(to)
                    && !(to == Success && matches!(from, PayError | Closed | Revoked))
            },
            &["a verified payment lost"],
        ),
        (
            "a close overrides a payment",
            |from, to| from.can_become(to) || (from == Success && to == Closed),
            &["a paid order is shown"],
        ),
        (
            "a repeated message is applied again",
            |from, to| from.can_become(to) || from == to,
            // A repeated payment or a repeated failure report, whichever the
            // sequence drawn reaches first: both are a message applied twice.
            &[
                "a second transition to SUCCESS",
                "a message changed the order a second time",
            ],
        ),
        (
            "a failure report reopens a closed order",
            |from, to| from.can_become(to) || (from == Closed && to == PayError),
            // Which check fires first depends on the sequence drawn.
            &["(model)", "a message changed the order a second time"],
        ),
        (
            "a refund of an order never paid",
            |from, to| from.can_become(to) || (from == Closed && to == Refund),
            &["(model)", "a message changed the order a second time"],
        ),
    ];
    for (name, can_become, check) in mutants {
        match run(can_become, 2_000) {
            Err(e) => {
                eprintln!("{name}: caught: {e}");
                assert!(
                    check.iter().any(|c| e.contains(c)),
                    "{name}: expected one of {check:?}, got {e}"
                );
            }
            Ok(_) => panic!("the model did not notice: {name}"),
        }
    }
}
