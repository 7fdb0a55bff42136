//! Applying a proven payment result to its order, shared by the XML
//! notification and the cloud-pay callback: the order must exist and the amount
//! must match, then one conditional transition (with its outbox event) decides
//! whether this message changed anything. Every function that reads or writes
//! here takes a [`Proven`] report, so nothing reaches the store before
//! [`crate::proof`] passed it; nothing here looks at the wire format. The XML
//! notification knows the merchant and amount from the message itself, so it
//! settles guarded ([`settle_guarded`]): the transition checks them against
//! the row, and the order is read only when they disagree.

use chrono::{DateTime, Utc};
use wxpay_core::domain::{EventSource, Fee, Order, OrderStatus, OutTradeNo, TransactionId};
use wxpay_store::{AnomalyKind, Guard, StoreError, Transition, TransitionOutcome};

use crate::{proof::Proven, state::AppState, verdict::Verdict};

/// What WeChat reported for one order, typed: the one report both wire
/// formats (the XML notification, the cloud-pay JSON) are read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReport {
    pub out_trade_no: OutTradeNo,
    /// `None` when the message's amount is missing or not a whole number of fen.
    pub total_fee: Option<Fee>,
    /// CNY when absent.
    pub fee_type: Option<String>,
    pub result: Reported,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Paid {
        transaction_id: TransactionId,
        /// May be 0 when coupons paid it all, so it is not a `Fee`.
        cash_fee: Option<i64>,
        paid_at: Option<DateTime<Utc>>,
    },
    /// result_code FAIL.
    Failed,
}

/// The result fields as a wire format gives them, amounts already read its way.
#[derive(Debug, Clone, Copy)]
pub struct Wire<'a> {
    pub out_trade_no: Option<&'a str>,
    pub result_code: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub total_fee: Option<Fee>,
    pub cash_fee: Option<i64>,
    pub fee_type: Option<&'a str>,
    pub paid_at: Option<DateTime<Utc>>,
}

impl PaymentReport {
    /// The report the fields make; `None` when the order number, the result
    /// or (for a payment) the transaction_id is missing or unreadable.
    pub fn read(w: Wire<'_>) -> Option<Self> {
        let out_trade_no = OutTradeNo::parse(w.out_trade_no?).ok()?;
        let result = match w.result_code? {
            "SUCCESS" => Reported::Paid {
                transaction_id: TransactionId::parse(w.transaction_id?).ok()?,
                cash_fee: w.cash_fee,
                paid_at: w.paid_at,
            },
            "FAIL" => Reported::Failed,
            _ => return None,
        };
        Some(Self {
            out_trade_no,
            total_fee: w.total_fee,
            fee_type: w.fee_type.map(str::to_owned),
            result,
        })
    }

    /// Whether the amount is in CNY (the only currency orders are placed in).
    pub fn is_cny(&self) -> bool {
        self.fee_type.as_deref().unwrap_or("CNY") == "CNY"
    }
}

/// The order a proven report is about (`Err`: the verdict when the database
/// cannot say).
pub(crate) async fn order_of(
    state: &AppState,
    report: &Proven<PaymentReport>,
) -> Result<Option<Order>, Verdict> {
    let no = &report.message().out_trade_no;
    state
        .store
        .order(no)
        .await
        .map_err(|e| store_failure(no.as_str(), e))
}

/// Maps a storage failure to a verdict. Every variant means "retry later" to
/// WeChat except a vanished order; detail is logged, never replied.
pub(crate) fn store_failure(out_trade_no: &str, e: StoreError) -> Verdict {
    match e {
        StoreError::NotFound => Verdict::UnknownOrder,
        StoreError::Unavailable(_) => {
            tracing::warn!(out_trade_no, error = %e, "database unavailable; asking WeChat to retry");
            Verdict::Unavailable
        }
        StoreError::Conflict(_) | StoreError::Corrupt(_) => {
            tracing::error!(out_trade_no, error = %e, "storage refused the notification");
            Verdict::Unavailable
        }
    }
}

/// What a guarded settle did.
#[derive(Debug)]
pub(crate) enum Guarded {
    /// The transition ran (or found the order already moved): the verdict.
    Settled(Verdict),
    /// The order is not what the message says (or does not exist): nothing
    /// changed, and the caller refuses the message for the reason the order
    /// shows.
    Disagrees(Option<Box<Order>>),
}

/// Applies `report` without reading its order first: the transition is made
/// only if the order is `guard`'s (merchant, amount).
pub(crate) async fn settle_guarded(
    state: &AppState,
    guard: &Guard,
    report: &Proven<PaymentReport>,
    source: EventSource,
) -> Guarded {
    apply_report(state, report.message(), source, Some(guard)).await
}

/// The transition `report` asks for (SUCCESS or PAYERROR), guarded or not.
async fn apply_report(
    state: &AppState,
    report: &PaymentReport,
    source: EventSource,
    guard: Option<&Guard>,
) -> Guarded {
    match &report.result {
        Reported::Paid {
            transaction_id,
            cash_fee,
            paid_at,
        } => {
            pay(
                state,
                &report.out_trade_no,
                transaction_id,
                *cash_fee,
                *paid_at,
                source,
                guard,
            )
            .await
        }
        Reported::Failed => fail(state, &report.out_trade_no, source, guard).await,
    }
}

/// Steps 3-6 for a proven report whose merchant was checked: the order
/// exists, the amount matches, then the transition and the event.
pub(crate) async fn settle(
    state: &AppState,
    order: Option<Order>,
    report: &Proven<PaymentReport>,
    source: EventSource,
) -> Verdict {
    let report = report.message();
    let no = report.out_trade_no.as_str();
    let Some(order) = order else {
        // Signed by WeChat for an order we never made. FAIL keeps WeChat retrying for a
        // day, which leaves time to find out whether it is ours (another deployment's
        // database, a restore from backup) before the message is gone.
        state
            .anomaly(
                AnomalyKind::UnknownOrder,
                no,
                "a signed payment result for an unknown out_trade_no".into(),
            )
            .await;
        return Verdict::UnknownOrder;
    };
    let fee_type = report.fee_type.as_deref().unwrap_or("CNY");
    if report.total_fee != Some(order.total_fee) || !report.is_cny() {
        // A valid signature with the wrong amount is the classic fake-payment attack
        // (or a bug that would lose money): never mark the order paid.
        let given = report
            .total_fee
            .map(|f| f.to_string())
            .unwrap_or_else(|| "unreadable".into());
        state
            .anomaly(
                AnomalyKind::AmountMismatch,
                no,
                format!(
                    "reported {given} {fee_type}, order is {} CNY",
                    order.total_fee
                ),
            )
            .await;
        return Verdict::AmountMismatch;
    }

    let settled = apply_report(state, report, source, None).await;
    match settled {
        Guarded::Settled(verdict) => verdict,
        // Unguarded, nothing disagrees; should it, the message is answered
        // "retry later", which changes nothing.
        Guarded::Disagrees(_) => Verdict::Unavailable,
    }
}

async fn pay(
    state: &AppState,
    out_trade_no: &OutTradeNo,
    transaction_id: &TransactionId,
    cash_fee: Option<i64>,
    paid_at: Option<DateTime<Utc>>,
    source: EventSource,
    guard: Option<&Guard>,
) -> Guarded {
    let no = out_trade_no.as_str();
    let t = Transition {
        out_trade_no: out_trade_no.clone(),
        to: OrderStatus::Success,
        transaction_id: Some(transaction_id.as_str().to_owned()),
        cash_fee,
        paid_at,
        source,
        guard: guard.cloned(),
    };
    let outcome = state.ledger.apply(&t).await;
    if let Some(disagrees) = disagreement(guard, &outcome) {
        return disagrees;
    }
    Guarded::Settled(match outcome {
        Ok(TransitionOutcome::Applied {
            order, previous, ..
        }) => {
            tracing::info!(out_trade_no = no, version = order.version, %transaction_id, from = %previous, "order paid");
            if matches!(previous, OrderStatus::Closed | OrderStatus::Revoked) {
                // WeChat has the money, so the order shows it; someone must now
                // refund the payer or deliver after all.
                state
                    .anomaly(
                        AnomalyKind::PaidAfterClose,
                        no,
                        format!("payment {transaction_id} arrived for an order that was {previous}; refund or deliver"),
                    )
                    .await;
            }
            Verdict::Applied
        }
        Ok(TransitionOutcome::Unchanged { order }) => match order.status {
            OrderStatus::Success | OrderStatus::Refund
                if order.transaction_id.as_deref() == Some(transaction_id.as_str()) =>
            {
                Verdict::Duplicate
            }
            // Paid twice under two transaction_ids. The state machine will never
            // accept this message, so a FAIL would only make WeChat resend it for a
            // day with the same result; the money question (refund one of them) is
            // for a human, via the anomaly.
            OrderStatus::Success | OrderStatus::Refund => {
                state
                    .anomaly(
                        AnomalyKind::PaymentConflict,
                        no,
                        format!(
                            "payment {transaction_id} reported for an order already {} (transaction {})",
                            order.status,
                            order.transaction_id.as_deref().unwrap_or("none")
                        ),
                    )
                    .await;
                Verdict::Conflict
            }
            // The move is allowed from these, so "unchanged" means the order moved
            // between the UPDATE and the re-read; a retry will see where it settled.
            OrderStatus::NotPay
            | OrderStatus::UserPaying
            | OrderStatus::PayError
            | OrderStatus::Closed
            | OrderStatus::Revoked => Verdict::Unavailable,
        },
        Err(StoreError::Conflict(detail)) => {
            // transaction_id is unique: WeChat reports one payment for two orders.
            state
                .anomaly(
                    AnomalyKind::TransactionReused,
                    no,
                    format!("transaction {transaction_id} is already recorded for another order: {detail}"),
                )
                .await;
            Verdict::Conflict
        }
        Err(e) => store_failure(no, e),
    })
}

/// A guarded transition that changed nothing because the order is not the
/// guard's, or does not exist: the caller explains it from the order.
fn disagreement(
    guard: Option<&Guard>,
    outcome: &Result<TransitionOutcome, StoreError>,
) -> Option<Guarded> {
    let guard = guard?;
    match outcome {
        Ok(TransitionOutcome::Unchanged { order }) if !guard.admits(order) => {
            Some(Guarded::Disagrees(Some(Box::new(order.clone()))))
        }
        Err(StoreError::NotFound) => Some(Guarded::Disagrees(None)),
        _ => None,
    }
}

async fn fail(
    state: &AppState,
    out_trade_no: &OutTradeNo,
    source: EventSource,
    guard: Option<&Guard>,
) -> Guarded {
    let no = out_trade_no.as_str();
    let t = Transition {
        out_trade_no: out_trade_no.clone(),
        to: OrderStatus::PayError,
        transaction_id: None,
        cash_fee: None,
        paid_at: None,
        source,
        guard: guard.cloned(),
    };
    let outcome = state.ledger.apply(&t).await;
    if let Some(disagrees) = disagreement(guard, &outcome) {
        return disagrees;
    }
    Guarded::Settled(match outcome {
        Ok(TransitionOutcome::Applied { order, .. }) => {
            tracing::info!(out_trade_no = no, version = order.version, "payment failed");
            Verdict::Applied
        }
        Ok(TransitionOutcome::Unchanged { order }) if order.status == OrderStatus::PayError => {
            Verdict::Duplicate
        }
        Ok(TransitionOutcome::Unchanged { order }) => {
            // Already decided (paid, closed): a failure report cannot undo that.
            tracing::warn!(out_trade_no = no, status = %order.status, "payment failure reported for a decided order; ignored");
            Verdict::Ignored
        }
        Err(e) => store_failure(no, e),
    })
}
