//! WeChat's side of the v2 wire protocol: how a request is checked (XML, merchant,
//! signature, required fields, limits) and how a reply is written and signed.
//! Pure: no I/O and no state, so the checks are testable one by one. What a
//! request *does* to an order lives in `orders`; the HTTP glue in `wechat_api`.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, TimeDelta, Timelike, Utc};
use wxpay_core::{
    domain::{Fee, Nonce, OutTradeNo},
    wechat::{china_time, sign, xml, Fields, Merchant, SignType, XmlError},
};

use crate::{
    bill::BillType,
    orders::{NewOrder, NewRefund, RefundRef},
};

/// Why a request was refused, in WeChat's two layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `return_code` FAIL: the message itself is unusable (malformed, bad
    /// signature). The reply carries only `return_msg` and is not signed.
    Return(&'static str),
    /// `result_code` FAIL with `err_code` / `err_code_des`; the reply is signed.
    Business { code: &'static str, des: String },
}

impl Rejection {
    fn business(code: &'static str, des: impl Into<String>) -> Self {
        Rejection::Business {
            code,
            des: des.into(),
        }
    }

    fn lack(field: &str) -> Self {
        Rejection::business("LACK_PARAMS", format!("缺少参数{field}"))
    }

    fn param(des: impl Into<String>) -> Self {
        Rejection::business("PARAM_ERROR", des)
    }
}

/// Decodes the body with the product's own strict codec, mapped to WeChat's codes.
pub fn decode_request(body: &[u8]) -> Result<Fields, Rejection> {
    xml::decode(body).map_err(|e| match e {
        XmlError::Empty => Rejection::Return("POST_DATA_EMPTY"),
        XmlError::NotUtf8 => Rejection::Return("NOT_UTF8"),
        XmlError::TooLarge(_)
        | XmlError::Doctype
        | XmlError::WrongRoot(_)
        | XmlError::DuplicateField(_)
        | XmlError::Nested(_)
        | XmlError::UnknownEntity
        | XmlError::Malformed(_)
        | XmlError::BadFieldName(_) => Rejection::Return("XML_FORMAT_ERROR"),
    })
}

/// The request's `sign_type`: absent means MD5; anything unknown cannot be verified.
pub fn request_sign_type(fields: &Fields) -> Result<SignType, Rejection> {
    match fields.get("sign_type").map(String::as_str) {
        None | Some("") => Ok(SignType::Md5),
        Some(s) => s.parse().map_err(|_| Rejection::Return("SIGNERROR")),
    }
}

/// The merchant is ours and the signature is theirs.
pub fn authenticate(
    fields: &Fields,
    merchant: &Merchant,
    sign_type: SignType,
) -> Result<(), Rejection> {
    let mch_id = non_empty(fields, "mch_id")?;
    if mch_id != merchant.mch_id {
        return Err(Rejection::business("MCHID_NOT_EXIST", "商户号不存在"));
    }
    let appid = non_empty(fields, "appid")?;
    if appid != merchant.app_id {
        // An appid shaped like a real one exists, just not under this merchant.
        let shaped = appid.len() == 18
            && appid.starts_with("wx")
            && appid[2..].bytes().all(|b| b.is_ascii_hexdigit());
        return Err(if shaped {
            Rejection::business("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
        } else {
            Rejection::business("APPID_NOT_EXIST", "APPID不存在")
        });
    }
    sign::verify(fields, &merchant.api_key, sign_type)
        .map_err(|_| Rejection::Return("SIGNERROR"))?;
    let nonce = non_empty(fields, "nonce_str")?;
    if nonce.len() > 32 {
        return Err(Rejection::param("nonce_str参数长度有误"));
    }
    Ok(())
}

/// WeChat's words for a `time_expire` too close to now (1 minute is the floor
/// for micropay, 5 for every other trade type).
const EXPIRE_TOO_SHORT: &str = "time_expire时间过短，刷卡至少1分钟，其他5分钟";

/// The checks unifiedorder makes before it touches an order. `min_expire` is how
/// far ahead of `now` a `time_expire` must be.
pub fn unified_order(
    fields: &Fields,
    sign_type: SignType,
    now: DateTime<Utc>,
    min_expire: TimeDelta,
) -> Result<NewOrder, Rejection> {
    for field in [
        "body",
        "out_trade_no",
        "total_fee",
        "spbill_create_ip",
        "notify_url",
        "trade_type",
    ] {
        non_empty(fields, field)?;
    }
    let out_trade_no = out_trade_no(fields)?;
    let body = non_empty(fields, "body")?;
    if body.len() > 128 {
        return Err(Rejection::param("body参数长度有误"));
    }
    let attach = optional(fields, "attach");
    if attach.len() > 127 {
        return Err(Rejection::param("attach参数长度有误"));
    }
    let total_fee = Fee::parse_wire("total_fee", non_empty(fields, "total_fee")?)
        .map_err(|_| Rejection::param("invalid total_fee"))?;
    if !matches!(optional(fields, "fee_type"), "" | "CNY") {
        return Err(Rejection::param("fee_type参数错误"));
    }
    if non_empty(fields, "spbill_create_ip")?
        .parse::<IpAddr>()
        .is_err()
    {
        return Err(Rejection::param("spbill_create_ip参数格式错误"));
    }
    let notify_url = checked_notify_url(non_empty(fields, "notify_url")?)?;
    let trade_type = non_empty(fields, "trade_type")?;
    if !matches!(trade_type, "JSAPI" | "NATIVE" | "APP" | "MWEB") {
        return Err(Rejection::param("trade_type参数错误"));
    }
    let openid = optional(fields, "openid");
    if trade_type == "JSAPI" && openid.is_empty() {
        return Err(Rejection::param("JSAPI支付必须传openid"));
    }
    if let Some(start) = fields.get("time_start").filter(|s| !s.is_empty()) {
        china_time::parse(start).ok_or_else(|| Rejection::param("time_start格式错误"))?;
    }
    let time_expire = match fields.get("time_expire").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let t = china_time::parse(s).ok_or_else(|| Rejection::param("time_expire格式错误"))?;
            // Two refusals with WeChat's one message: a time already past stays the
            // business error it always was here, while a future time inside the floor
            // is PARAM_ERROR, as SDK authors record the live API answering.
            if t <= now {
                return Err(Rejection::business("INVALID_REQUEST", EXPIRE_TOO_SHORT));
            }
            // time_expire has whole seconds: compare at the same resolution, so
            // an order placed for exactly five minutes is not refused for the
            // milliseconds its request spent in transit.
            let now_seconds = now.with_nanosecond(0).unwrap_or(now);
            if t - now_seconds < min_expire {
                return Err(Rejection::param(EXPIRE_TOO_SHORT));
            }
            Some(t)
        }
    };
    let business = fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "nonce_str" | "sign"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(NewOrder {
        out_trade_no,
        body: body.to_owned(),
        attach: attach.to_owned(),
        openid: openid.to_owned(),
        trade_type: trade_type.to_owned(),
        total_fee: total_fee.fen(),
        notify_url: notify_url.to_owned(),
        time_expire,
        sign_type,
        business,
    })
}

/// An http(s) URL of at most 256 bytes, as WeChat accepts for notify_url.
fn checked_notify_url(url: &str) -> Result<&str, Rejection> {
    let scheme_ok = ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if !scheme_ok || url.len() > 256 {
        return Err(Rejection::param("notify_url参数格式错误"));
    }
    Ok(url)
}

/// The checks the refund API makes before it looks at the order.
pub fn refund(fields: &Fields, sign_type: SignType) -> Result<NewRefund, Rejection> {
    for field in ["out_refund_no", "total_fee", "refund_fee"] {
        non_empty(fields, field)?;
    }
    let order = query_ref(fields)?;
    let out_refund_no = out_refund_no(non_empty(fields, "out_refund_no")?)?;
    let total_fee = Fee::parse_wire("total_fee", non_empty(fields, "total_fee")?)
        .map_err(|_| Rejection::param("invalid total_fee"))?;
    let refund_fee = Fee::parse_wire("refund_fee", non_empty(fields, "refund_fee")?)
        .map_err(|_| Rejection::param("invalid refund_fee"))?;
    if !matches!(optional(fields, "refund_fee_type"), "" | "CNY") {
        return Err(Rejection::param("refund_fee_type参数错误"));
    }
    // String(80): bytes, as WeChat counts its other string limits.
    let refund_desc = optional(fields, "refund_desc");
    if refund_desc.len() > 80 {
        return Err(Rejection::param("refund_desc参数长度有误"));
    }
    let refund_account = match optional(fields, "refund_account") {
        "" => UNSETTLED_FUNDS,
        a @ (UNSETTLED_FUNDS | "REFUND_SOURCE_RECHARGE_FUNDS") => a,
        _ => return Err(Rejection::param("refund_account参数错误")),
    };
    let notify_url = match optional(fields, "notify_url") {
        "" => None,
        url => Some(checked_notify_url(url)?.to_owned()),
    };
    Ok(NewRefund {
        order,
        out_refund_no,
        total_fee: total_fee.fen(),
        refund_fee: refund_fee.fen(),
        refund_desc: refund_desc.to_owned(),
        refund_account: refund_account.to_owned(),
        notify_url,
        sign_type,
    })
}

/// The default source of refunded money (the merchant's unsettled funds).
pub const UNSETTLED_FUNDS: &str = "REFUND_SOURCE_UNSETTLED_FUNDS";

/// `out_refund_no`: at most 64 of `[0-9A-Za-z_\-|*@]`.
fn out_refund_no(s: &str) -> Result<String, Rejection> {
    let ok = s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Rejection::param("out_refund_no参数格式错误"))
    }
}

/// Which refunds refundquery asks about, and from which one on (`offset`).
pub fn refund_query(fields: &Fields) -> Result<(RefundRef, Option<usize>), Rejection> {
    let get = |k: &str| fields.get(k).filter(|s| !s.is_empty());
    let reference = if let Some(id) = get("refund_id") {
        RefundRef::RefundId(id.clone())
    } else if let Some(no) = get("out_refund_no") {
        RefundRef::OutRefundNo(out_refund_no(no)?)
    } else if get("transaction_id").is_some() || get("out_trade_no").is_some() {
        RefundRef::Order(query_ref(fields)?)
    } else {
        return Err(Rejection::lack("out_refund_no"));
    };
    let offset = match get("offset") {
        None => None,
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| Rejection::param("offset参数错误"))?,
        ),
    };
    Ok((reference, offset))
}

/// What downloadbill asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillRequest {
    pub date: NaiveDate,
    pub bill_type: BillType,
    pub gzip: bool,
}

/// Why downloadbill refused: its failures are all `return_code` FAIL, with
/// `return_msg` and, for its own checks, an `error_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillFailure {
    pub return_msg: String,
    pub error_code: Option<&'static str>,
}

impl BillFailure {
    /// A downloadbill parameter error (error_code 20001, *unconfirmed*: the docs
    /// list these messages, SDKs only ever record 20002).
    fn param(msg: &str) -> Self {
        Self {
            return_msg: msg.to_owned(),
            error_code: Some("20001"),
        }
    }

    /// "No Bill Exist": no trade that day. WeChat's docs write "NO", the live
    /// API "No" (WxJava #1241); the code is named error_code (WxJava #2108).
    pub fn no_bill() -> Self {
        Self {
            return_msg: "No Bill Exist".to_owned(),
            error_code: Some("20002"),
        }
    }
}

impl From<Rejection> for BillFailure {
    /// The checks shared with the other endpoints (XML, merchant, signature):
    /// downloadbill has no business layer, so they all become return_code FAIL.
    fn from(r: Rejection) -> Self {
        let return_msg = match r {
            Rejection::Return(msg) => msg.to_owned(),
            Rejection::Business { code, .. } => code.to_owned(),
        };
        Self {
            return_msg,
            error_code: None,
        }
    }
}

/// downloadbill's parameters: `bill_date` (yyyyMMdd), `bill_type` (default
/// ALL), `tar_type` (GZIP or absent).
pub fn bill_request(fields: &Fields) -> Result<BillRequest, BillFailure> {
    let date = match fields.get("bill_date").filter(|s| !s.is_empty()) {
        None => return Err(BillFailure::param("missing parameter")),
        Some(d) if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) => {
            NaiveDate::parse_from_str(d, "%Y%m%d")
                .map_err(|_| BillFailure::param("invalid bill_date"))?
        }
        Some(_) => return Err(BillFailure::param("invalid bill_date")),
    };
    let bill_type = match optional(fields, "bill_type") {
        "" => BillType::All,
        t => t
            .parse()
            .map_err(|()| BillFailure::param("invalid bill_type"))?,
    };
    let gzip = match optional(fields, "tar_type") {
        "" => false,
        "GZIP" => true,
        _ => return Err(BillFailure::param("invalid tar_type")),
    };
    Ok(BillRequest {
        date,
        bill_type,
        gzip,
    })
}

/// Which order orderquery asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    OutTradeNo(String),
    TransactionId(String),
}

/// orderquery names its order by `transaction_id` (preferred by WeChat) or `out_trade_no`.
pub fn query_ref(fields: &Fields) -> Result<OrderRef, Rejection> {
    match fields.get("transaction_id").filter(|s| !s.is_empty()) {
        Some(tid) => Ok(OrderRef::TransactionId(tid.clone())),
        None => match fields.get("out_trade_no").filter(|s| !s.is_empty()) {
            Some(_) => out_trade_no(fields).map(OrderRef::OutTradeNo),
            None => Err(Rejection::lack("out_trade_no")),
        },
    }
}

/// closeorder's one parameter.
pub fn out_trade_no(fields: &Fields) -> Result<String, Rejection> {
    let s = non_empty(fields, "out_trade_no")?;
    OutTradeNo::parse(s)
        .map(|n| n.as_str().to_owned())
        .map_err(|_| Rejection::param("out_trade_no参数格式错误"))
}

fn non_empty<'a>(fields: &'a Fields, field: &str) -> Result<&'a str, Rejection> {
    match fields.get(field) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Rejection::lack(field)),
    }
}

fn optional<'a>(fields: &'a Fields, field: &str) -> &'a str {
    fields.get(field).map(String::as_str).unwrap_or("")
}

/// A reply to send: either unsigned return FAIL or a signed message.
pub fn render(
    outcome: Result<Fields, Rejection>,
    merchant: &Merchant,
    sign_type: SignType,
) -> Fields {
    let mut reply = Fields::new();
    match outcome {
        Err(Rejection::Return(msg)) => {
            reply.insert("return_code".into(), "FAIL".into());
            reply.insert("return_msg".into(), msg.into());
            return reply;
        }
        Err(Rejection::Business { code, des }) => {
            reply.insert("result_code".into(), "FAIL".into());
            reply.insert("err_code".into(), code.into());
            reply.insert("err_code_des".into(), des);
        }
        Ok(extra) => {
            reply = extra;
            reply.insert("result_code".into(), "SUCCESS".into());
        }
    }
    reply.insert("return_code".into(), "SUCCESS".into());
    reply.insert("return_msg".into(), "OK".into());
    reply.insert("appid".into(), merchant.app_id.clone());
    reply.insert("mch_id".into(), merchant.mch_id.clone());
    reply.insert("nonce_str".into(), Nonce::generate().as_str().into());
    sign::sign_fields(&mut reply, &merchant.api_key, sign_type);
    reply
}

/// Replaces a signed reply's `sign` with one that cannot verify (the
/// `bad_signature` fault: what a forged or corrupted reply looks like).
pub fn forge_signature(reply: &mut Fields) {
    if let Some(sign) = reply.get_mut("sign") {
        let first = if sign.starts_with('0') { "1" } else { "0" };
        sign.replace_range(..1.min(sign.len()), first);
    }
}

/// The XML text of a reply. Values come from our own orders, which came through
/// the strict decoder, so encoding fails only on a bug; that becomes a bare
/// SYSTEMERROR rather than a panic.
pub fn to_xml(reply: &Fields) -> String {
    xml::encode(reply.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_or_else(|e| {
        tracing::error!(error = %e, "a reply could not be encoded");
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[SYSTEMERROR]]></return_msg></xml>".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpay_core::wechat::ApiKey;

    fn merchant() -> Merchant {
        Merchant {
            app_id: "wx0123456789abcdef".into(),
            mch_id: "1900000109".into(),
            api_key: ApiKey::parse("sandboxtestkey0123456789abcdefgh").expect("valid key"),
        }
    }

    fn signed(pairs: &[(&str, &str)], sign_type: SignType) -> Fields {
        let mut f: Fields = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        sign::sign_fields(&mut f, &merchant().api_key, sign_type);
        f
    }

    fn order_fields() -> Vec<(&'static str, &'static str)> {
        vec![
            ("appid", "wx0123456789abcdef"),
            ("mch_id", "1900000109"),
            ("nonce_str", "abc"),
            ("body", "测试"),
            ("out_trade_no", "T1"),
            ("total_fee", "1"),
            ("spbill_create_ip", "127.0.0.1"),
            ("notify_url", "http://127.0.0.1/notify"),
            ("trade_type", "JSAPI"),
            ("openid", "o1"),
        ]
    }

    fn with(field: &'static str, value: &'static str) -> Fields {
        let mut pairs = order_fields();
        pairs.retain(|(k, _)| *k != field);
        if !value.is_empty() {
            pairs.push((field, value));
        }
        signed(&pairs, SignType::Md5)
    }

    fn code(r: Result<NewOrder, Rejection>) -> &'static str {
        match r {
            Err(Rejection::Business { code, .. }) => code,
            Err(Rejection::Return(msg)) => msg,
            Ok(_) => "OK",
        }
    }

    #[test]
    fn malformed_bodies_get_return_fail_codes() {
        assert_eq!(
            decode_request(b""),
            Err(Rejection::Return("POST_DATA_EMPTY"))
        );
        assert_eq!(
            decode_request(b"<xml><a>"),
            Err(Rejection::Return("XML_FORMAT_ERROR"))
        );
        assert_eq!(
            decode_request(b"<xml><a>\xff</a></xml>"),
            Err(Rejection::Return("NOT_UTF8"))
        );
    }

    #[test]
    fn foreign_merchants_and_bad_signatures_are_refused() {
        let m = merchant();
        let good = signed(&order_fields(), SignType::Md5);
        assert_eq!(authenticate(&good, &m, SignType::Md5), Ok(()));
        assert_eq!(
            authenticate(&good, &m, SignType::HmacSha256),
            Err(Rejection::Return("SIGNERROR"))
        );
        let mut tampered = good.clone();
        tampered.insert("total_fee".into(), "100".into());
        assert_eq!(
            authenticate(&tampered, &m, SignType::Md5),
            Err(Rejection::Return("SIGNERROR"))
        );
        let mut other_mch = good.clone();
        other_mch.insert("mch_id".into(), "1".into());
        assert!(matches!(
            authenticate(&other_mch, &m, SignType::Md5),
            Err(Rejection::Business {
                code: "MCHID_NOT_EXIST",
                ..
            })
        ));
        let mut other_app = good.clone();
        other_app.insert("appid".into(), "wxffffffffffffffff".into());
        assert!(matches!(
            authenticate(&other_app, &m, SignType::Md5),
            Err(Rejection::Business {
                code: "APPID_MCHID_NOT_MATCH",
                ..
            })
        ));
        other_app.insert("appid".into(), "nope".into());
        assert!(matches!(
            authenticate(&other_app, &m, SignType::Md5),
            Err(Rejection::Business {
                code: "APPID_NOT_EXIST",
                ..
            })
        ));
    }

    #[test]
    fn unknown_sign_types_cannot_be_verified() {
        let mut f = Fields::new();
        assert_eq!(request_sign_type(&f), Ok(SignType::Md5));
        f.insert("sign_type".into(), "HMAC-SHA256".into());
        assert_eq!(request_sign_type(&f), Ok(SignType::HmacSha256));
        f.insert("sign_type".into(), "SHA1".into());
        assert_eq!(request_sign_type(&f), Err(Rejection::Return("SIGNERROR")));
    }

    #[test]
    fn unifiedorder_checks_wechats_limits() {
        let now = Utc::now();
        let check = |f: Fields| code(unified_order(&f, SignType::Md5, now, TimeDelta::zero()));
        assert_eq!(check(with("openid", "o1")), "OK");
        assert_eq!(check(with("body", "")), "LACK_PARAMS");
        assert_eq!(check(with("notify_url", "")), "LACK_PARAMS");
        assert_eq!(check(with("openid", "")), "PARAM_ERROR");
        assert_eq!(check(with("out_trade_no", "has space")), "PARAM_ERROR");
        assert_eq!(
            check(with("out_trade_no", "123456789012345678901234567890123")),
            "PARAM_ERROR"
        );
        assert_eq!(check(with("total_fee", "0")), "PARAM_ERROR");
        assert_eq!(check(with("total_fee", "1.00")), "PARAM_ERROR");
        assert_eq!(check(with("spbill_create_ip", "localhost")), "PARAM_ERROR");
        assert_eq!(check(with("time_expire", "2020-01-01")), "PARAM_ERROR");
        assert_eq!(
            check(with("time_expire", "20200101000000")),
            "INVALID_REQUEST"
        );
        assert_eq!(check(with("time_expire", "20990101000000")), "OK");
        let long_body: &'static str = Box::leak("中".repeat(43).into_boxed_str());
        assert_eq!(check(with("body", long_body)), "PARAM_ERROR");
        let long_attach: &'static str = Box::leak("a".repeat(128).into_boxed_str());
        assert_eq!(check(with("attach", long_attach)), "PARAM_ERROR");
    }

    #[test]
    fn time_expire_must_be_at_least_the_floor_ahead() {
        let now = china_time::parse("20240101120000").expect("valid");
        let floor = TimeDelta::seconds(300);
        let check = |t: &'static str| {
            code(unified_order(
                &with("time_expire", t),
                SignType::Md5,
                now,
                floor,
            ))
        };
        assert_eq!(check("20240101115959"), "INVALID_REQUEST");
        assert_eq!(check("20240101120000"), "INVALID_REQUEST");
        assert_eq!(check("20240101120459"), "PARAM_ERROR");
        assert_eq!(check("20240101120500"), "OK");
        let short = unified_order(
            &with("time_expire", "20240101120100"),
            SignType::Md5,
            now,
            floor,
        );
        assert_eq!(
            short.err(),
            Some(Rejection::Business {
                code: "PARAM_ERROR",
                des: "time_expire时间过短，刷卡至少1分钟，其他5分钟".to_owned()
            })
        );
    }

    #[test]
    fn the_same_order_is_recognised_whatever_its_nonce() {
        let now = Utc::now();
        let floor = TimeDelta::zero();
        let a = unified_order(&with("nonce_str", "one"), SignType::Md5, now, floor).expect("valid");
        let b = unified_order(&with("nonce_str", "two"), SignType::Md5, now, floor).expect("valid");
        assert_eq!(a.business, b.business);
        let c = unified_order(&with("total_fee", "2"), SignType::Md5, now, floor).expect("valid");
        assert_ne!(a.business, c.business);
    }

    fn refund_fields(pairs: &[(&'static str, &'static str)]) -> Fields {
        let mut all = vec![
            ("appid", "wx0123456789abcdef"),
            ("mch_id", "1900000109"),
            ("nonce_str", "abc"),
            ("out_trade_no", "T1"),
            ("out_refund_no", "R1"),
            ("total_fee", "100"),
            ("refund_fee", "10"),
        ];
        for (k, v) in pairs {
            all.retain(|(key, _)| key != k);
            if !v.is_empty() {
                all.push((k, v));
            }
        }
        signed(&all, SignType::Md5)
    }

    #[test]
    fn refund_requests_are_checked_field_by_field() {
        let check = |pairs: &[(&'static str, &'static str)]| match refund(
            &refund_fields(pairs),
            SignType::Md5,
        ) {
            Ok(_) => "OK",
            Err(Rejection::Business { code, .. }) => code,
            Err(Rejection::Return(msg)) => msg,
        };
        assert_eq!(check(&[]), "OK");
        assert_eq!(check(&[("out_refund_no", "a|b*c@d-e_f")]), "OK");
        let long: &'static str = Box::leak("9".repeat(65).into_boxed_str());
        assert_eq!(check(&[("out_refund_no", long)]), "PARAM_ERROR");
        assert_eq!(check(&[("out_refund_no", "has space")]), "PARAM_ERROR");
        assert_eq!(check(&[("out_refund_no", "")]), "LACK_PARAMS");
        assert_eq!(check(&[("out_trade_no", "")]), "LACK_PARAMS");
        assert_eq!(check(&[("refund_fee", "0")]), "PARAM_ERROR");
        assert_eq!(check(&[("total_fee", "1.00")]), "PARAM_ERROR");
        assert_eq!(check(&[("refund_fee_type", "USD")]), "PARAM_ERROR");
        assert_eq!(check(&[("refund_account", "MY_POCKET")]), "PARAM_ERROR");
        assert_eq!(check(&[("notify_url", "ftp://x")]), "PARAM_ERROR");
        let desc: &'static str = Box::leak("退".repeat(27).into_boxed_str());
        assert_eq!(check(&[("refund_desc", desc)]), "PARAM_ERROR");
        let by_tid =
            refund(&refund_fields(&[("transaction_id", "4200")]), SignType::Md5).expect("valid");
        assert_eq!(by_tid.order, OrderRef::TransactionId("4200".into()));
        assert_eq!(by_tid.refund_account, UNSETTLED_FUNDS);
        assert_eq!(by_tid.notify_url, None);
    }

    #[test]
    fn refundquery_prefers_the_refund_id_then_the_refund_number() {
        let q = |pairs: &[(&'static str, &'static str)]| refund_query(&refund_fields(pairs));
        assert_eq!(
            q(&[("refund_id", "503")]),
            Ok((RefundRef::RefundId("503".into()), None))
        );
        assert_eq!(q(&[]), Ok((RefundRef::OutRefundNo("R1".into()), None)));
        assert_eq!(
            q(&[("out_refund_no", ""), ("offset", "10")]),
            Ok((
                RefundRef::Order(OrderRef::OutTradeNo("T1".into())),
                Some(10)
            ))
        );
        assert!(q(&[("out_refund_no", ""), ("out_trade_no", "")]).is_err());
        assert!(q(&[("offset", "-1")]).is_err());
    }

    #[test]
    fn downloadbill_needs_a_real_date_and_knows_its_types() {
        let req = |pairs: &[(&'static str, &'static str)]| {
            let f: Fields = pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            bill_request(&f)
        };
        assert_eq!(
            req(&[("bill_date", "20240229")]),
            Ok(BillRequest {
                date: NaiveDate::from_ymd_opt(2024, 2, 29).expect("valid"),
                bill_type: BillType::All,
                gzip: false
            })
        );
        assert_eq!(
            req(&[
                ("bill_date", "20240101"),
                ("bill_type", "REFUND"),
                ("tar_type", "GZIP")
            ])
            .map(|r| (r.bill_type, r.gzip)),
            Ok((BillType::Refund, true))
        );
        for bad in ["20230229", "2024-01-01", "2024010", ""] {
            let failure = req(&[("bill_date", bad)]).expect_err(bad);
            assert_eq!(failure.error_code, Some("20001"), "{bad}");
        }
        assert!(req(&[("bill_date", "20240101"), ("bill_type", "all")]).is_err());
        assert!(req(&[("bill_date", "20240101"), ("tar_type", "ZIP")]).is_err());
    }

    #[test]
    fn replies_are_signed_except_return_fail() {
        let m = merchant();
        let fail = render(Err(Rejection::Return("SIGNERROR")), &m, SignType::Md5);
        assert_eq!(fail.len(), 2);
        assert!(!fail.contains_key("sign"));
        let ok = render(Ok(Fields::new()), &m, SignType::HmacSha256);
        assert_eq!(ok.get("sign_type").map(String::as_str), Some("HMAC-SHA256"));
        assert_eq!(sign::verify(&ok, &m.api_key, SignType::HmacSha256), Ok(()));
        let mut forged = ok.clone();
        forge_signature(&mut forged);
        assert!(sign::verify(&forged, &m.api_key, SignType::HmacSha256).is_err());
    }
}
