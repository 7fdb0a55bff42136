//! `POST /wechat/pay/notify`: WeChat's v2 payment result. Proven first
//! ([`crate::proof::pay`]: signed under the key of the merchant it names, by
//! either of its algorithms), then read into one typed [`PaymentReport`], then
//! decided and applied through [`crate::payment`]. Nothing is read or written
//! for a body that is not proven. Every proven message is kept with its
//! verdict and the algorithm it was signed with; the raw body is logged only
//! without `sign`.

use axum::body::Bytes;
use wxpay_core::{
    domain::{EventSource, Fee, Order},
    wechat::{china_time, xml, Fields, MerchantEntry},
};
use wxpay_store::{AnomalyKind, Guard};

use crate::{
    paid_cache::Settled,
    payment::{self, Guarded, PaymentReport, Reported, Wire},
    proof::{self, Proven},
    state::AppState,
    verdict::{Judged, Verdict},
};

/// What a proven payment notification says.
#[derive(Debug)]
enum PayNotice {
    /// return_code FAIL: the transport layer's, with no business result.
    NoResult,
    /// Signed with the merchant's key, but for another appid / sub_appid.
    OtherApp { out_trade_no: Option<String> },
    /// A payment result, typed.
    Report(PaymentReport),
    /// A field the result needs is missing or unreadable.
    Unreadable,
}

/// Processes one payment notification body (already bounded in size).
pub async fn process(state: &AppState, body: Bytes) -> Judged {
    let proven = match proof::pay(&state.merchants, &body) {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let fields = proven.message();
    let out_trade_no = fields.get("out_trade_no").cloned();
    tracing::debug!(out_trade_no = out_trade_no.as_deref(), body = %redacted(fields), "pay notification received");
    let notice = proven.read(|fields| read(proven.merchant(), fields));
    let (verdict, from_cache) = decide(state, &notice).await;
    let sign_type = proven.sign_type().map(|t| t.as_str());
    tracing::info!(out_trade_no = out_trade_no.as_deref(), merchant = proven.merchant().map(|e| e.name.as_str()), sign_type, %verdict, from_cache, "pay notification");
    // An applied payment or its copy is already durable in the order row and
    // its event, so its audit copy joins the background batch instead of
    // costing a round trip before the reply (bench/ANALYSIS.md, "Which writes
    // are durable before the reply"). A refusal is kept before the reply:
    // it is what someone investigating will look for.
    let batched = from_cache || matches!(verdict, Verdict::Applied | Verdict::Duplicate);
    state
        .keep(&proven, out_trade_no.as_deref(), verdict, batched)
        .await;
    proven.judged(verdict)
}

/// The message as XML without `sign`, for logs.
pub(crate) fn redacted(fields: &Fields) -> String {
    xml::encode(
        fields
            .iter()
            .filter(|(k, _)| k.as_str() != "sign")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .unwrap_or_else(|_| "<unloggable>".to_owned())
}

/// Reads a proven message into what it says, in the order WeChat's fields
/// depend on each other: return_code, then whose app, then the result.
fn read(entry: Option<&MerchantEntry>, fields: &Fields) -> PayNotice {
    let get = |k: &str| fields.get(k).map(String::as_str);
    if get("return_code") != Some("SUCCESS") {
        return PayNotice::NoResult;
    }
    // The mch_id (and sub_mch_id) chose the entry; the appids must be its too.
    if !entry.is_some_and(|e| apps_match(e, get("appid"), get("sub_appid"))) {
        return PayNotice::OtherApp {
            out_trade_no: get("out_trade_no").map(str::to_owned),
        };
    }
    let wire = Wire {
        out_trade_no: get("out_trade_no"),
        result_code: get("result_code"),
        transaction_id: get("transaction_id"),
        total_fee: get("total_fee").and_then(|s| Fee::parse_wire("total_fee", s).ok()),
        // cash_fee may be 0 when coupons paid it all, so it is not a Fee.
        cash_fee: get("cash_fee")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|fen| *fen >= 0),
        fee_type: get("fee_type"),
        // Missing or unreadable time_end: the store uses the commit time.
        paid_at: get("time_end").and_then(china_time::parse),
    };
    match PaymentReport::read(wire) {
        Some(report) => PayNotice::Report(report),
        None => PayNotice::Unreadable,
    }
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
            // return_code FAIL carries no business result (v2 sends result
            // fields only with SUCCESS). Nothing to apply, and a FAIL reply
            // would only have WeChat resend the same empty message for a day;
            // the poller's orderquery learns the real outcome.
            tracing::warn!(merchant = %entry.name, "signed notification with return_code FAIL");
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
/// order or another amount. How the order was placed (MD5 or HMAC-SHA256) is
/// not checked: the signature proved the merchant, whichever it used.
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

/// Whether a message's `appid` (and `sub_appid`, when both it and the entry
/// have one) are the entry's. An empty `sub_appid` counts as absent, as an
/// empty `sub_mch_id` does when the merchant is looked up. The refund
/// notification's outer fields follow the same rule.
pub(crate) fn apps_match(
    entry: &MerchantEntry,
    appid: Option<&str>,
    sub_appid: Option<&str>,
) -> bool {
    let sub_matches = match (
        entry.sub_app_id.as_deref(),
        sub_appid.filter(|s| !s.is_empty()),
    ) {
        (Some(want), Some(got)) => want == got,
        // WeChat sends sub_appid only when the order was placed with one.
        _ => true,
    };
    appid == Some(entry.merchant.app_id.as_str()) && sub_matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpay_core::wechat::SignType;

    #[test]
    fn logged_bodies_leave_out_the_signature() {
        let fields: Fields = [
            ("out_trade_no", "A1"),
            ("sign", "9A0A8659F005D6984697E2CA0A9CF3B7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let logged = redacted(&fields);
        assert!(logged.contains("A1"));
        assert!(!logged.contains("9A0A8659"));
    }

    #[test]
    fn appids_are_the_entrys_and_sub_appid_only_counts_when_both_have_one() {
        use wxpay_core::wechat::{ApiKey, Merchant};
        let mut entry = MerchantEntry::direct(
            "tenant",
            Merchant {
                app_id: "wxprovider".into(),
                mch_id: "1900000200".into(),
                api_key: ApiKey::parse("gatewaytestkey0123456789abcdefgh").expect("key"),
            },
            SignType::HmacSha256,
        );
        assert!(apps_match(&entry, Some("wxprovider"), Some("wxanything")));
        assert!(!apps_match(&entry, Some("wxother"), None));
        assert!(!apps_match(&entry, None, None));
        entry.sub_mch_id = Some("1900000201".into());
        entry.sub_app_id = Some("wxsub".into());
        assert!(apps_match(&entry, Some("wxprovider"), Some("wxsub")));
        assert!(apps_match(&entry, Some("wxprovider"), None));
        assert!(apps_match(&entry, Some("wxprovider"), Some("")));
        assert!(!apps_match(&entry, Some("wxprovider"), Some("wxother")));
        assert!(!apps_match(&entry, Some("wxsub"), Some("wxsub")));
    }
}
