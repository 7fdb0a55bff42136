//! v2 `orderquery`, as a pure request and a pure reading of the reply: the
//! request a merchant signs for one out_trade_no, and what a reply proves once
//! its signature verifies under the same merchant's key. The HTTP around it is
//! the caller's (payment-service has its own client; the gateway asks before it
//! believes a cloud-pay SUCCESS). A reply is read only after `return_code`
//! SUCCESS (a FAIL reply is unsigned) and its signature; a reply about another
//! merchant or another order proves nothing.

use crate::domain::{Fee, OrderStatus, OutTradeNo, TransactionId};

use super::{sign, Fields, MerchantEntry, SignType};

/// The path under the API base.
pub const PATH: &str = "/pay/orderquery";

/// The signed request for `out_trade_no`, in the merchant's name (with the sub
/// merchant in service-provider mode).
pub fn request(
    entry: &MerchantEntry,
    out_trade_no: &OutTradeNo,
    nonce: &str,
    sign_type: SignType,
) -> Fields {
    let mut f = Fields::new();
    f.insert("appid".into(), entry.merchant.app_id.clone());
    f.insert("mch_id".into(), entry.merchant.mch_id.clone());
    if let Some(sub) = &entry.sub_mch_id {
        f.insert("sub_mch_id".into(), sub.clone());
    }
    if let Some(sub_app) = &entry.sub_app_id {
        f.insert("sub_appid".into(), sub_app.clone());
    }
    f.insert("out_trade_no".into(), out_trade_no.as_str().into());
    f.insert("nonce_str".into(), nonce.into());
    sign::sign_fields(&mut f, &entry.merchant.api_key, sign_type);
    f
}

/// What WeChat says about the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `trade_state` SUCCESS (or REFUND: it was paid), with the payment's
    /// transaction_id and amount when the reply gives them readably.
    Paid {
        transaction_id: Option<TransactionId>,
        total_fee: Option<Fee>,
    },
    /// Any other `trade_state`, or `ORDERNOTEXIST`: WeChat holds no payment.
    NotPaid(Option<OrderStatus>),
}

/// Why a reply proves nothing (the caller retries later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("return_code is not SUCCESS: {0}")]
    Return(String),
    #[error("the reply's signature does not verify")]
    Signature,
    #[error("the reply is about another merchant or order ({0})")]
    NotOurs(&'static str),
    #[error("WeChat answered {0}")]
    Business(String),
    #[error("missing or unknown trade_state")]
    TradeState,
}

/// Reads a decoded reply to [`request`] for `out_trade_no`.
pub fn read_reply(
    reply: &Fields,
    entry: &MerchantEntry,
    sign_type: SignType,
    out_trade_no: &OutTradeNo,
) -> Result<Answer, ReplyError> {
    let get = |k: &str| reply.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get("return_code") != Some("SUCCESS") {
        return Err(ReplyError::Return(
            get("return_msg")
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect(),
        ));
    }
    sign::verify(reply, &entry.merchant.api_key, sign_type).map_err(|_| ReplyError::Signature)?;
    for (field, ours) in [
        ("appid", Some(&entry.merchant.app_id)),
        ("mch_id", Some(&entry.merchant.mch_id)),
        ("sub_mch_id", entry.sub_mch_id.as_ref()),
        ("sub_appid", entry.sub_app_id.as_ref()),
    ] {
        if get(field).is_some_and(|v| Some(v) != ours.map(String::as_str)) {
            return Err(ReplyError::NotOurs(field));
        }
    }
    if get("result_code") != Some("SUCCESS") {
        return match get("err_code") {
            Some("ORDERNOTEXIST") => Ok(Answer::NotPaid(None)),
            code => Err(ReplyError::Business(
                code.unwrap_or("UNKNOWN").chars().take(64).collect(),
            )),
        };
    }
    if get("out_trade_no") != Some(out_trade_no.as_str()) {
        return Err(ReplyError::NotOurs("out_trade_no"));
    }
    let state = get("trade_state")
        .and_then(|s| s.parse::<OrderStatus>().ok())
        .ok_or(ReplyError::TradeState)?;
    Ok(match state {
        OrderStatus::Success | OrderStatus::Refund => Answer::Paid {
            transaction_id: get("transaction_id").and_then(|s| TransactionId::parse(s).ok()),
            total_fee: get("total_fee").and_then(|s| Fee::parse_wire("total_fee", s).ok()),
        },
        other => Answer::NotPaid(Some(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::{ApiKey, Merchant};

    fn entry() -> MerchantEntry {
        MerchantEntry::direct(
            "default",
            Merchant {
                app_id: "wxd930ea5d5a258f4f".into(),
                mch_id: "10000100".into(),
                api_key: ApiKey::parse("192006250b4c09247ec02edce69f6a2d").expect("key"),
            },
            SignType::Md5,
        )
    }

    fn reply(pairs: &[(&str, &str)], key: &ApiKey, st: SignType) -> Fields {
        let mut f: Fields = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        sign::sign_fields(&mut f, key, st);
        f
    }

    fn paid(no: &str) -> Vec<(&str, &str)> {
        vec![
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("out_trade_no", no),
            ("trade_state", "SUCCESS"),
            ("transaction_id", "4200000000000000000000000001"),
            ("total_fee", "990"),
        ]
    }

    #[test]
    fn the_request_is_signed_for_the_order_and_a_signed_reply_is_read() {
        let e = entry();
        let no = OutTradeNo::parse("A1").expect("no");
        let req = request(&e, &no, "n0nce", SignType::HmacSha256);
        assert_eq!(
            sign::verify_any(&req, &e.merchant.api_key),
            Ok(SignType::HmacSha256)
        );
        assert_eq!(req.get("out_trade_no").map(String::as_str), Some("A1"));
        let r = reply(&paid("A1"), &e.merchant.api_key, SignType::HmacSha256);
        assert_eq!(
            read_reply(&r, &e, SignType::HmacSha256, &no),
            Ok(Answer::Paid {
                transaction_id: TransactionId::parse("4200000000000000000000000001").ok(),
                total_fee: Fee::new(990).ok(),
            })
        );
    }

    #[test]
    fn unsigned_foreign_or_unpaid_replies_do_not_say_paid() {
        let e = entry();
        let no = OutTradeNo::parse("A1").expect("no");
        let key = e.merchant.api_key.clone();
        let other = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("key");
        let st = SignType::Md5;
        assert_eq!(
            read_reply(&reply(&paid("A1"), &other, st), &e, st, &no),
            Err(ReplyError::Signature)
        );
        assert_eq!(
            read_reply(&reply(&paid("A2"), &key, st), &e, st, &no),
            Err(ReplyError::NotOurs("out_trade_no"))
        );
        let mut foreign = paid("A1");
        foreign[3] = ("mch_id", "10000101");
        assert_eq!(
            read_reply(&reply(&foreign, &key, st), &e, st, &no),
            Err(ReplyError::NotOurs("mch_id"))
        );
        let mut notpay = paid("A1");
        notpay[5] = ("trade_state", "NOTPAY");
        assert_eq!(
            read_reply(&reply(&notpay, &key, st), &e, st, &no),
            Ok(Answer::NotPaid(Some(OrderStatus::NotPay)))
        );
        let missing = [
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "ORDERNOTEXIST"),
        ];
        assert_eq!(
            read_reply(&reply(&missing, &key, st), &e, st, &no),
            Ok(Answer::NotPaid(None))
        );
        let busy = [
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "SYSTEMERROR"),
        ];
        assert_eq!(
            read_reply(&reply(&busy, &key, st), &e, st, &no),
            Err(ReplyError::Business("SYSTEMERROR".into()))
        );
        let fail: Fields = [("return_code", "FAIL"), ("return_msg", "签名错误")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert!(matches!(
            read_reply(&fail, &e, st, &no),
            Err(ReplyError::Return(_))
        ));
    }
}
