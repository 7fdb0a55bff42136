//! `POST /wechat/pay/notify`: WeChat's v2 payment result. Owns the order of
//! checks for the XML message (well-formed, signed by the merchant it names,
//! for that merchant's appid and order) and hands the authenticated result to
//! [`crate::payment`]. The merchant is found from the message's `mch_id` and
//! `sub_mch_id` before anything else, because its key is what proves the
//! message; nothing is read or written for a body that is not authentic,
//! including one naming a merchant this deployment does not serve (see
//! [`crate::refusals`]). Every authentic message is kept with its verdict, and
//! the raw body is logged only without `sign`.

use wxpay_core::{
    domain::{EventSource, Fee, MerchantName, Order, OutTradeNo, TransactionId},
    wechat::{china_time, sign, xml, Fields, MerchantEntry, SignType},
};
use wxpay_store::{AnomalyKind, Guard};

use crate::{
    paid_cache::Settled,
    payment::{self, Guarded, PaymentReport, Reported},
    refusals,
    state::AppState,
    verdict::{Judged, Kind, Verdict},
};

/// Processes one payment notification body (already bounded in size).
pub async fn process(state: &AppState, body: &[u8]) -> Judged {
    let fields = match xml::decode(body) {
        Ok(fields) => fields,
        Err(_) => {
            // Not kept: a body that is not a message holds nothing to audit or replay.
            refusals::refused("pay", "malformed", body);
            return Judged::anonymous(Verdict::Malformed);
        }
    };
    let get = |k: &str| fields.get(k).map(String::as_str);
    let out_trade_no = get("out_trade_no");
    tracing::debug!(out_trade_no, body = %redacted(&fields), "pay notification received");
    // Checked before anything touches the database: unsigned traffic costs nothing.
    if get("sign").is_none_or(str::is_empty) {
        refusals::refused("pay", "bad_signature", body);
        return Judged::anonymous(Verdict::BadSignature);
    }
    let Some(entry) = get("mch_id").and_then(|m| state.merchants.for_message(m, get("sub_mch_id")))
    else {
        // No key here can verify it, so it is as unproven as a bad signature and
        // refused the same way: counted, never stored, no database work (or a
        // forger could fill the database by inventing mch_ids).
        refusals::refused("pay", "unknown_merchant", body);
        return Judged::anonymous(Verdict::BadSignature);
    };
    let (verdict, from_cache) = judge(state, entry, &fields).await;
    if verdict == Verdict::BadSignature {
        // Not from WeChat: nothing to audit, and storing it would let anyone
        // fill the database. Not counted under the merchant either: the
        // message only claims to be its.
        refusals::refused("pay", "bad_signature", body);
        return Judged::anonymous(verdict);
    }
    tracing::info!(out_trade_no, merchant = %entry.name, %verdict, from_cache, "pay notification");
    // An applied payment or its copy is already durable in the order row and
    // its event, so its audit copy joins the background batch instead of
    // costing a round trip before the reply (bench/ANALYSIS.md, "Which writes
    // are durable before the reply"). A refusal is kept before the reply:
    // it is what someone investigating will look for.
    let batched = from_cache || matches!(verdict, Verdict::Applied | Verdict::Duplicate);
    state
        .keep(Kind::Pay, out_trade_no, verdict, body, batched)
        .await;
    Judged::for_merchant(verdict, &entry.name)
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

/// The verdict about a signed message naming `entry`'s numbers, and whether it
/// was reached from the settled cache without the database.
async fn judge(state: &AppState, entry: &MerchantEntry, fields: &Fields) -> (Verdict, bool) {
    let out_trade_no = fields
        .get("out_trade_no")
        .and_then(|s| OutTradeNo::parse(s).ok());
    // An order this gateway already saw paid, for this merchant: its sign type
    // and amount are known. Another merchant's copy is judged from the database.
    let cached = out_trade_no
        .as_ref()
        .and_then(|no| state.settled.get_for(no.as_str(), &entry.name));
    judge_with(state, entry, fields, out_trade_no, cached.as_ref()).await
}

async fn judge_with(
    state: &AppState,
    entry: &MerchantEntry,
    fields: &Fields,
    out_trade_no: Option<OutTradeNo>,
    cached: Option<&Settled>,
) -> (Verdict, bool) {
    let get = |k: &str| fields.get(k).map(String::as_str);
    let plain = |v: Verdict| (v, false);

    // WeChat may omit sign_type even for an HMAC-SHA256 order; the signature's
    // length tells the two apart (32 hex digits for MD5, 64 for HMAC-SHA256), so
    // no message is read from the database before it is authentic. The order's
    // recorded sign type is checked once the order is loaded.
    let sign_type = match get("sign_type") {
        Some(s) => match s.parse::<SignType>() {
            Ok(t) => t,
            Err(_) => return plain(Verdict::BadSignature),
        },
        None => match get("sign").map(str::len) {
            Some(32) => SignType::Md5,
            Some(64) => SignType::HmacSha256,
            _ => return plain(Verdict::BadSignature),
        },
    };
    if cached.is_some_and(|c| c.sign_type != sign_type) {
        return plain(Verdict::BadSignature);
    }
    // Only the named merchant's key: a message signed by one merchant cannot
    // pass for another's by naming its mch_id.
    if let Err(e) = sign::verify(fields, &entry.merchant.api_key, sign_type) {
        tracing::warn!(out_trade_no = get("out_trade_no"), merchant = %entry.name, error = %e, %sign_type, "pay notification signature refused");
        return plain(Verdict::BadSignature);
    }

    // Authentic from here on.
    if get("return_code") != Some("SUCCESS") {
        // return_code is the transport layer: FAIL carries no business result (v2
        // sends result fields only with return_code SUCCESS). There is nothing to
        // apply, and answering FAIL would only have WeChat resend the same empty
        // message for a day; the poller's orderquery learns the real outcome.
        tracing::warn!(
            out_trade_no = get("out_trade_no"),
            return_msg = get("return_msg"),
            "signed notification with return_code FAIL"
        );
        return plain(Verdict::Ignored);
    }
    // The mch_id (and sub_mch_id) chose the entry; the appids must be its too.
    if !apps_match(entry, get("appid"), get("sub_appid")) {
        if let Some(no) = get("out_trade_no") {
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
    let Some(out_trade_no) = out_trade_no else {
        return plain(Verdict::Invalid);
    };
    let result = match get("result_code") {
        Some("SUCCESS") => {
            let Some(transaction_id) =
                get("transaction_id").and_then(|s| TransactionId::parse(s).ok())
            else {
                return plain(Verdict::Invalid);
            };
            Reported::Paid {
                transaction_id: transaction_id.as_str().to_owned(),
                // cash_fee may be 0 when coupons paid it all, so it is not a Fee.
                cash_fee: get("cash_fee")
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|fen| *fen >= 0),
                // Missing or unreadable time_end: the store uses the commit time.
                paid_at: get("time_end").and_then(china_time::parse),
            }
        }
        Some("FAIL") => Reported::Failed,
        _ => return plain(Verdict::Invalid),
    };
    let total_fee = get("total_fee").and_then(|s| Fee::parse_wire("total_fee", s).ok());
    let fee_type = get("fee_type").map(str::to_owned);
    if let (Some(c), Reported::Paid { transaction_id, .. }) = (cached, &result) {
        if *transaction_id == c.transaction_id
            && total_fee == Some(c.total_fee)
            && fee_type.as_deref().unwrap_or("CNY") == "CNY"
        {
            // The same payment again, already durable: nothing to check in the database.
            return (Verdict::Duplicate, true);
        }
    }
    let report = PaymentReport {
        total_fee,
        fee_type,
        out_trade_no,
        result,
    };
    // A readable CNY amount, with the merchant and sign type already known from
    // the verified message, is all the order must agree with: the transition
    // checks it in its own statement and the order is read only when it does
    // not agree (or does not exist), to say why.
    let guard = match (report.total_fee, report.fee_type.as_deref()) {
        (Some(total_fee), None | Some("CNY")) => {
            MerchantName::parse(&entry.name).ok().map(|merchant| Guard {
                merchant,
                sign_type,
                total_fee,
            })
        }
        _ => None,
    };
    let order = match guard {
        Some(guard) => {
            match payment::settle_guarded(state, &guard, &report, EventSource::Notify).await {
                Guarded::Settled(verdict) => {
                    if let (
                        Verdict::Applied | Verdict::Duplicate,
                        Reported::Paid { transaction_id, .. },
                    ) = (verdict, &report.result)
                    {
                        let settled = Settled {
                            merchant: guard.merchant,
                            sign_type,
                            total_fee: guard.total_fee,
                            transaction_id: transaction_id.clone(),
                        };
                        state.settled.insert(report.out_trade_no.as_str(), settled);
                    }
                    return plain(verdict);
                }
                Guarded::Disagrees(order) => order.map(|o| *o),
            }
        }
        None => match state.store.order(&report.out_trade_no).await {
            Ok(order) => order,
            Err(e) => return plain(payment::store_failure(report.out_trade_no.as_str(), e)),
        },
    };
    plain(refuse_or_settle(state, entry, sign_type, order, report).await)
}

/// The checks the guarded transition makes, one by one against the order as
/// read, so a message that does not fit its order is refused for the right
/// reason: another merchant's order, another sign type, then (in
/// [`payment::settle`]) a missing order or another amount. A message that
/// passes them all (its amount was unreadable, so nothing was guarded) is
/// settled unguarded; `settle` refuses it on the amount.
async fn refuse_or_settle(
    state: &AppState,
    entry: &MerchantEntry,
    sign_type: SignType,
    order: Option<Order>,
    report: PaymentReport,
) -> Verdict {
    let out_trade_no = report.out_trade_no.as_str();
    if let Some(o) = order
        .as_ref()
        .filter(|o| o.placement.merchant.as_str() != entry.name)
    {
        // Genuinely signed by one of our merchants, about another one's order:
        // its money went to the signer's account, not to the order's, so
        // marking the order paid would deliver goods nobody paid its merchant for.
        state
            .anomaly(
                AnomalyKind::WrongMerchant,
                out_trade_no,
                format!(
                    "a notification signed with merchant {}'s key is about an order of merchant {}",
                    entry.name, o.placement.merchant
                ),
            )
            .await;
        return Verdict::WrongMerchant;
    }
    if order.as_ref().is_some_and(|o| o.sign_type != sign_type) {
        // Signed with its merchant's key but not the way this order was placed: not a
        // notification WeChat sends for it.
        tracing::warn!(out_trade_no, %sign_type, "pay notification signed unlike its order");
        return Verdict::BadSignature;
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
