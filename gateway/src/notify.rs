//! `POST /wechat/pay/notify`: WeChat's v2 payment result. Owns the order of
//! checks for the XML message (well-formed, signed, our merchant) and hands the
//! authenticated result to [`crate::payment`]. Nothing is read or written for a
//! body that is not authentic (see [`crate::refusals`]); every authentic message
//! is kept with its verdict, and the raw body is logged only without `sign`.

use wxpay_core::{
    domain::{EventSource, Fee, OutTradeNo, TransactionId},
    wechat::{china_time, sign, xml, Fields, SignType},
};
use wxpay_store::AnomalyKind;

use crate::{
    paid_cache::Settled,
    payment::{self, PaymentReport, Reported},
    refusals,
    state::AppState,
    verdict::{Kind, Verdict},
};

/// Processes one payment notification body (already bounded in size).
pub async fn process(state: &AppState, body: &[u8]) -> Verdict {
    let fields = match xml::decode(body) {
        Ok(fields) => fields,
        Err(_) => {
            // Not kept: a body that is not a message holds nothing to audit or replay.
            refusals::refused("pay", "malformed", body);
            return Verdict::Malformed;
        }
    };
    let out_trade_no = fields.get("out_trade_no").map(String::as_str);
    tracing::debug!(out_trade_no, body = %redacted(&fields), "pay notification received");
    let (verdict, from_cache) = judge(state, &fields).await;
    if verdict == Verdict::BadSignature {
        // Not from WeChat: nothing to audit, and storing it would let anyone
        // fill the database.
        refusals::refused("pay", "bad_signature", body);
        return verdict;
    }
    tracing::info!(out_trade_no, %verdict, from_cache, "pay notification");
    state
        .keep(Kind::Pay, out_trade_no, verdict, body, from_cache)
        .await;
    verdict
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

/// The verdict, and whether it was reached from the settled cache without the database.
async fn judge(state: &AppState, fields: &Fields) -> (Verdict, bool) {
    let get = |k: &str| fields.get(k).map(String::as_str);
    // Checked before anything touches the database: unsigned traffic costs nothing.
    if get("sign").is_none_or(str::is_empty) {
        return (Verdict::BadSignature, false);
    }
    let out_trade_no = get("out_trade_no").and_then(|s| OutTradeNo::parse(s).ok());
    // An order this gateway already saw paid: its sign type and amount are known.
    let cached = out_trade_no
        .as_ref()
        .and_then(|no| state.settled.get(no.as_str()));
    judge_with(state, fields, out_trade_no, cached.as_ref()).await
}

async fn judge_with(
    state: &AppState,
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
    if let Err(e) = sign::verify(fields, &state.merchant.api_key, sign_type) {
        tracing::warn!(out_trade_no = get("out_trade_no"), error = %e, %sign_type, "pay notification signature refused");
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
    if get("appid") != Some(state.merchant.app_id.as_str())
        || get("mch_id") != Some(state.merchant.mch_id.as_str())
    {
        if let Some(no) = get("out_trade_no") {
            state
                .anomaly(
                    AnomalyKind::WrongMerchant,
                    no,
                    "a notification signed with our key names another appid/mch_id".into(),
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
    let order = match state.store.order(&out_trade_no).await {
        Ok(order) => order,
        Err(e) => return plain(payment::store_failure(out_trade_no.as_str(), e)),
    };
    if order.as_ref().is_some_and(|o| o.sign_type != sign_type) {
        // Signed with our key but not the way this order was placed: not a
        // notification WeChat sends for it.
        tracing::warn!(out_trade_no = %out_trade_no, %sign_type, "pay notification signed unlike its order");
        return plain(Verdict::BadSignature);
    }
    let paid = match (&order, &result) {
        (Some(o), Reported::Paid { transaction_id, .. }) => Some((
            out_trade_no.as_str().to_owned(),
            Settled {
                sign_type: o.sign_type,
                total_fee: o.total_fee,
                transaction_id: transaction_id.clone(),
            },
        )),
        _ => None,
    };
    let report = PaymentReport {
        total_fee,
        fee_type,
        out_trade_no,
        result,
    };
    let verdict = payment::settle(state, order, report, EventSource::Notify).await;
    if let (Verdict::Applied | Verdict::Duplicate, Some((no, settled))) = (verdict, paid) {
        state.settled.insert(&no, settled);
    }
    plain(verdict)
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
}
