//! `POST /wechat/pay/notify`: WeChat's v2 payment result. Proven first
//! ([`crate::proof::pay`]: signed under the key of the merchant it names, by
//! either of its algorithms), then read by this module's parser into one typed
//! [`PayNotice`], then decided, applied and kept by
//! [`crate::pay_notice::conclude`], which the v3 notification shares. Nothing
//! is read or written for a body that is not proven. The raw body is logged
//! only without `sign`.

use axum::body::Bytes;
use wxpay_core::{
    domain::Fee,
    wechat::{china_time, xml, Fields, MerchantEntry},
};

use crate::{
    pay_notice::{self, PayNotice},
    payment::{PaymentReport, Wire},
    proof,
    state::AppState,
    verdict::Judged,
};

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
    pay_notice::conclude(state, &notice, out_trade_no.as_deref()).await
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
