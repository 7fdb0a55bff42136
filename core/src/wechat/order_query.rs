//! v2 `orderquery`, as a pure request and a pure reading of the reply: the
//! request a merchant signs for one out_trade_no, and what a reply proves once
//! its signature verifies under the same merchant's key. This is the one reader
//! of orderquery replies: payment-service's client reads the whole [`Report`]
//! ([`read_report`]); the gateway, which asks before it believes a cloud-pay
//! SUCCESS, only whether it says paid ([`read_reply`]). The HTTP around it is
//! each caller's. A reply is read only after `return_code` SUCCESS (a FAIL
//! reply is unsigned) and its signature; a reply about another merchant or
//! another order proves nothing, and neither does one whose amount or
//! transaction id cannot be read exactly.

use chrono::{DateTime, Utc};

use crate::domain::{Fee, OrderStatus, OutTradeNo, TransactionId};

use super::{china_time, sign, Fields, MerchantEntry, SignType};

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

/// What a verified reply about the order says, each field read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub trade_state: OrderStatus,
    /// The payment's id; WeChat gives one once the order was paid.
    pub transaction_id: Option<TransactionId>,
    /// The order's amount as WeChat holds it.
    pub total_fee: Option<Fee>,
    /// What the payer paid in cash, fen (`cash_fee`); informational, so a
    /// value that is not a number is left out rather than refused.
    pub cash_fee: Option<i64>,
    /// When the payment completed (`time_end`, Beijing time); informational
    /// like `cash_fee`.
    pub time_end: Option<DateTime<Utc>>,
}

/// What WeChat says about the order, as far as a payment goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `trade_state` SUCCESS (or REFUND: it was paid), with the payment's
    /// transaction_id and amount when the reply gives them.
    Paid {
        transaction_id: Option<TransactionId>,
        total_fee: Option<Fee>,
    },
    /// Any other `trade_state`, or `ORDERNOTEXIST`: WeChat holds no payment.
    NotPaid(Option<OrderStatus>),
}

impl From<Report> for Answer {
    fn from(r: Report) -> Self {
        match r.trade_state {
            OrderStatus::Success | OrderStatus::Refund => Answer::Paid {
                transaction_id: r.transaction_id,
                total_fee: r.total_fee,
            },
            other => Answer::NotPaid(Some(other)),
        }
    }
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
    /// `result_code` FAIL: WeChat's `err_code` and `err_code_des`.
    #[error("WeChat answered {code}: {message}")]
    Business { code: String, message: String },
    #[error("missing or unknown trade_state")]
    TradeState,
    /// A field we would act on (an amount, an id) that is not a valid value.
    #[error("the reply's {0} cannot be read")]
    Unreadable(&'static str),
}

/// The `err_code` of a reply about an order WeChat never saw.
pub const ORDER_NOT_EXIST: &str = "ORDERNOTEXIST";

/// Reads a decoded reply to [`request`] for `out_trade_no`: everything it says
/// about the order. `ORDERNOTEXIST` is a [`ReplyError::Business`] here, as
/// every other `err_code`: whether "never seen" settles anything is the
/// caller's to decide.
pub fn read_report(
    reply: &Fields,
    entry: &MerchantEntry,
    sign_type: SignType,
    out_trade_no: &str,
) -> Result<Report, ReplyError> {
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
        // Bounded: both end up in logs and in the caller's error message.
        return Err(ReplyError::Business {
            code: get("err_code")
                .unwrap_or("UNKNOWN")
                .chars()
                .take(64)
                .collect(),
            message: get("err_code_des")
                .unwrap_or_default()
                .chars()
                .take(256)
                .collect(),
        });
    }
    if get("out_trade_no") != Some(out_trade_no) {
        return Err(ReplyError::NotOurs("out_trade_no"));
    }
    let trade_state = get("trade_state")
        .and_then(|s| s.parse::<OrderStatus>().ok())
        .ok_or(ReplyError::TradeState)?;
    // An id or amount that is there but unreadable is refused, not skipped: a
    // payment must never be recorded on a value we could not read exactly.
    let transaction_id = get("transaction_id")
        .map(|s| TransactionId::parse(s).map_err(|_| ReplyError::Unreadable("transaction_id")))
        .transpose()?;
    let total_fee = get("total_fee")
        .map(|s| Fee::parse_wire("total_fee", s).map_err(|_| ReplyError::Unreadable("total_fee")))
        .transpose()?;
    Ok(Report {
        trade_state,
        transaction_id,
        total_fee,
        cash_fee: get("cash_fee").and_then(|s| s.parse().ok()),
        time_end: get("time_end").and_then(china_time::parse),
    })
}

/// Reads a decoded reply to [`request`] for `out_trade_no` as far as a
/// payment goes; `ORDERNOTEXIST` is [`Answer::NotPaid`] (WeChat holds nothing).
pub fn read_reply(
    reply: &Fields,
    entry: &MerchantEntry,
    sign_type: SignType,
    out_trade_no: &OutTradeNo,
) -> Result<Answer, ReplyError> {
    match read_report(reply, entry, sign_type, out_trade_no.as_str()) {
        Ok(report) => Ok(report.into()),
        Err(ReplyError::Business { code, .. }) if code == ORDER_NOT_EXIST => {
            Ok(Answer::NotPaid(None))
        }
        Err(e) => Err(e),
    }
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
            Err(ReplyError::Business {
                code: "SYSTEMERROR".into(),
                message: String::new()
            })
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

    #[test]
    fn a_report_carries_every_field_the_service_records() {
        let e = entry();
        let key = e.merchant.api_key.clone();
        let st = SignType::Md5;
        let mut fields = paid("A1");
        fields.extend([("cash_fee", "900"), ("time_end", "20170330102422")]);
        let report = read_report(&reply(&fields, &key, st), &e, st, "A1").expect("read");
        assert_eq!(
            report,
            Report {
                trade_state: OrderStatus::Success,
                transaction_id: TransactionId::parse("4200000000000000000000000001").ok(),
                total_fee: Fee::new(990).ok(),
                cash_fee: Some(900),
                time_end: china_time::parse("20170330102422"),
            }
        );
        let missing = [
            ("return_code", "SUCCESS"),
            ("result_code", "FAIL"),
            ("err_code", "ORDERNOTEXIST"),
            ("err_code_des", "订单不存在"),
        ];
        assert_eq!(
            read_report(&reply(&missing, &key, st), &e, st, "A1"),
            Err(ReplyError::Business {
                code: ORDER_NOT_EXIST.into(),
                message: "订单不存在".into()
            })
        );
    }

    #[test]
    fn an_unreadable_amount_or_id_is_refused_not_skipped() {
        let e = entry();
        let key = e.merchant.api_key.clone();
        let st = SignType::Md5;
        let no = OutTradeNo::parse("A1").expect("no");
        for (i, field, bad) in [
            (7, "total_fee", "9.90"),
            (7, "total_fee", "0"),
            (6, "transaction_id", "42-00"),
        ] {
            let mut fields = paid("A1");
            fields[i] = (field, bad);
            let signed = reply(&fields, &key, st);
            assert_eq!(
                read_report(&signed, &e, st, "A1"),
                Err(ReplyError::Unreadable(field)),
                "{field}={bad}"
            );
            assert_eq!(
                read_reply(&signed, &e, st, &no),
                Err(ReplyError::Unreadable(field))
            );
        }
    }
}
