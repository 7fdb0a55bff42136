//! A proven payment notification, whatever its dialect: what it says
//! ([`PayNotice`], read from the message by the dialect's parser: v2's XML in
//! [`crate::notify`], v3's decrypted JSON in [`crate::notify_v3`]), the one
//! decision about it, the one write path ([`crate::payment`]'s exactly-once
//! transition and its event), and keeping it. Both dialects end in
//! [`conclude`], so a payment is paid, refused, counted and audited the same
//! way whichever protocol WeChat spoke; nothing here looks at a wire format.

use wxpay_core::domain::{EventSource, Order};
use wxpay_store::{AnomalyKind, Guard};

use crate::{
    paid_cache::Settled,
    payment::{self, Guarded, PaymentReport, Reported},
    proof::{self, Proven},
    state::AppState,
    verdict::{Judged, Verdict},
};

/// What a proven payment notification says.
#[derive(Debug)]
pub enum PayNotice {
    /// Genuine, but with no payment result to apply: v2's return_code FAIL
    /// (its transport layer's, with no business result), or a v3 event other
    /// than `TRANSACTION.SUCCESS`.
    NoResult,
    /// Proven under the merchant's key, but for another appid / sub_appid.
    OtherApp { out_trade_no: Option<String> },
    /// A payment result, typed.
    Report(PaymentReport),
    /// A field the result needs is missing or unreadable.
    Unreadable,
}

/// Decides about a proven notice, keeps the message with its verdict, and
/// says what to answer. `out_trade_no` is the order number as the message
/// wrote it (kept in the audit row even when it does not parse).
pub async fn conclude(
    state: &AppState,
    notice: &Proven<PayNotice>,
    out_trade_no: Option<&str>,
) -> Judged {
    let (verdict, from_cache) = decide(state, notice).await;
    tracing::info!(
        kind = notice.kind().as_str(),
        out_trade_no,
        merchant = notice.merchant().map(|e| e.name.as_str()),
        proof = notice.proof_name(),
        %verdict,
        from_cache,
        "pay notification"
    );
    // An applied payment or its copy is already durable in the order row and
    // its event, so its audit copy joins the background batch instead of
    // costing a round trip before the reply (bench/ANALYSIS.md, "Which writes
    // are durable before the reply"). A refusal is kept before the reply:
    // it is what someone investigating will look for.
    let batched = from_cache || matches!(verdict, Verdict::Applied | Verdict::Duplicate);
    state.keep(notice, out_trade_no, verdict, batched).await;
    notice.judged(verdict)
}

/// The verdict about a proven notice, and whether it was reached from the
/// settled cache without the database.
async fn decide(state: &AppState, notice: &Proven<PayNotice>) -> (Verdict, bool) {
    let plain = |v: Verdict| (v, false);
    let Some(entry) = notice.merchant() else {
        return plain(Verdict::BadSignature);
    };
    let report = match notice.message() {
        PayNotice::NoResult => {
            // Nothing to apply, and a FAIL reply would only have WeChat
            // resend the same message for a day; the poller's orderquery
            // learns the real outcome.
            tracing::warn!(merchant = %entry.name, kind = notice.kind().as_str(),
                "genuine notification without a payment result; acknowledged");
            return plain(Verdict::Ignored);
        }
        PayNotice::OtherApp { out_trade_no } => {
            if let Some(no) = out_trade_no {
                state
                    .anomaly(
                        AnomalyKind::WrongMerchant,
                        no,
                        format!(
                            "a notification signed with merchant {}'s key names another appid/sub_appid",
                            entry.name
                        ),
                    )
                    .await;
            }
            return plain(Verdict::WrongMerchant);
        }
        PayNotice::Unreadable => return plain(Verdict::Invalid),
        PayNotice::Report(report) => report,
    };
    let report = notice.read(|_| report.clone());
    let r = report.message();
    // An order this gateway already saw paid, for this merchant: its amount
    // and transaction are known. Another merchant's copy goes to the database.
    if let (Some(cached), Reported::Paid { transaction_id, .. }) = (
        state.settled.get_for(&r.out_trade_no, &entry.name),
        &r.result,
    ) {
        if *transaction_id == cached.transaction_id
            && r.total_fee == Some(cached.total_fee)
            && r.is_cny()
        {
            // The same payment again, already durable: nothing to check.
            return (Verdict::Duplicate, true);
        }
    }
    plain(settle(state, &report).await)
}

/// A readable CNY amount and the merchant from the proof are all the order
/// must agree with: the transition checks them in its own statement, and
/// the order is read only when they do not agree (or it does not exist), to
/// say why.
async fn settle(state: &AppState, report: &Proven<PaymentReport>) -> Verdict {
    let r = report.message();
    let guard = match (report.authority(), r.total_fee) {
        (proof::Authority::Merchant { name, .. }, Some(total_fee)) if r.is_cny() => Some(Guard {
            merchant: name.clone(),
            total_fee,
        }),
        _ => None,
    };
    let order = match guard {
        Some(guard) => {
            match payment::settle_guarded(state, &guard, report, EventSource::Notify).await {
                Guarded::Settled(verdict) => {
                    if let (
                        Verdict::Applied | Verdict::Duplicate,
                        Reported::Paid { transaction_id, .. },
                    ) = (verdict, &r.result)
                    {
                        let settled = Settled {
                            merchant: guard.merchant,
                            total_fee: guard.total_fee,
                            transaction_id: transaction_id.clone(),
                        };
                        state.settled.insert(&r.out_trade_no, settled);
                    }
                    return verdict;
                }
                Guarded::Disagrees(order) => order.map(|o| *o),
            }
        }
        None => match payment::order_of(state, report).await {
            Ok(order) => order,
            Err(verdict) => return verdict,
        },
    };
    refuse_or_settle(state, report, order).await
}

/// The check the guarded transition makes on the merchant, against the order
/// as read, so a message that does not fit its order is refused for the right
/// reason: another merchant's order, then (in [`payment::settle`]) a missing
/// order or another amount. How the order was placed (MD5, HMAC-SHA256, v3)
/// is not checked: the proof named the merchant, whichever way it was made.
async fn refuse_or_settle(
    state: &AppState,
    report: &Proven<PaymentReport>,
    order: Option<Order>,
) -> Verdict {
    let out_trade_no = report.message().out_trade_no.as_str();
    let signer = report
        .merchant()
        .map(|e| e.name.as_str())
        .unwrap_or_default();
    if let Some(o) = order
        .as_ref()
        .filter(|o| o.placement.merchant.as_str() != signer)
    {
        // Genuinely signed by one of our merchants, about another one's order:
        // its money went to the signer's account, not to the order's, so
        // marking the order paid would deliver goods nobody paid its merchant for.
        state
            .anomaly(
                AnomalyKind::WrongMerchant,
                out_trade_no,
                format!(
                    "a notification signed with merchant {signer}'s key is about an order of merchant {}",
                    o.placement.merchant
                ),
            )
            .await;
        return Verdict::WrongMerchant;
    }
    payment::settle(state, order, report, EventSource::Notify).await
}
