//! WeChat's side of the v2 wire protocol: how a request is checked (XML, merchant,
//! signature, required fields, limits) and how a reply is written and signed.
//! Pure: no I/O and no state, so the checks are testable one by one. What a
//! request *does* to an order lives in `orders`; the HTTP glue in `wechat_api`.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, TimeDelta, Timelike, Utc};
use wxpay_core::{
    domain::{Fee, Nonce, OutTradeNo},
    wechat::{china_time, sign, xml, ApiKey, ApiVersion, Fields, SignType, XmlError},
};

use crate::{
    accounts::{Owner, Registry},
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

/// Who an authenticated request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account its mch_id names, and the sub merchant it names (if any).
    pub owner: Owner,
    pub app_id: String,
    pub sub_app_id: Option<String>,
}

/// What a reply is signed with and names: the account the request's mch_id
/// names, whatever else is wrong with the request (an unknown mch_id has no
/// key, so its refusal goes out unsigned).
#[derive(Debug, Clone)]
pub struct Signer {
    pub app_id: String,
    pub mch_id: String,
    pub sub_mch_id: Option<String>,
    pub sub_app_id: Option<String>,
    pub api_key: ApiKey,
}

impl Signer {
    /// The request's appid and sub merchant are echoed only when they belong
    /// to the account; otherwise the reply names the account's first appid.
    pub fn for_request(fields: &Fields, accounts: &Registry) -> Option<Self> {
        let hosted = accounts.get(fields.get("mch_id")?)?;
        let app_id = fields
            .get("appid")
            .filter(|a| hosted.app_ids.contains(*a))
            .map_or_else(|| hosted.primary_app_id.clone(), Clone::clone);
        let sub = fields
            .get("sub_mch_id")
            .and_then(|s| hosted.sub_merchants.get_key_value(s));
        let sub_app_id = sub.and_then(|(_, apps)| {
            fields
                .get("sub_appid")
                .filter(|a| apps.contains(*a))
                .cloned()
        });
        Some(Self {
            app_id,
            mch_id: hosted.mch_id.clone(),
            sub_mch_id: sub.map(|(s, _)| s.clone()),
            sub_app_id,
            api_key: hosted.api_key.clone(),
        })
    }
}

/// Which rule about sub merchants applies: a trade needs one at a pure
/// service provider; a bill may be the provider's whole (all sub merchants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Trade,
    Bill,
}

/// WeChat's words (return_code FAIL) for a provider's request without a sub
/// merchant, and for a direct merchant's with one (borball/weixin-sdk #64,
/// WxJava #1170).
const SUB_MCH_REQUIRED: &str = "受理机构必须传入sub_mch_id";
const SUB_MCH_NOT_ALLOWED: &str = "普通商户不允许传sub_mch_id";

/// The mch_id is one we host, the appid is the account's, the signature is
/// made with the account's key, and the sub merchant (service-provider mode)
/// is bound to that account.
pub fn authenticate(
    fields: &Fields,
    accounts: &Registry,
    sign_type: SignType,
    scope: Scope,
) -> Result<Caller, Rejection> {
    let mch_id = non_empty(fields, "mch_id")?;
    let Some(hosted) = accounts.get(mch_id) else {
        return Err(Rejection::business("MCHID_NOT_EXIST", "商户号不存在"));
    };
    let appid = non_empty(fields, "appid")?;
    if !hosted.app_ids.contains(appid) {
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
    sign::verify(fields, &hosted.api_key, sign_type).map_err(|_| Rejection::Return("SIGNERROR"))?;
    let nonce = non_empty(fields, "nonce_str")?;
    if nonce.len() > 32 {
        return Err(Rejection::param("nonce_str参数长度有误"));
    }
    let sub_mch_id = fields.get("sub_mch_id").filter(|s| !s.is_empty());
    let sub_app_id = fields.get("sub_appid").filter(|s| !s.is_empty());
    match sub_mch_id {
        None if sub_app_id.is_some() => return Err(Rejection::lack("sub_mch_id")),
        None if !hosted.direct && scope == Scope::Trade => {
            return Err(Rejection::Return(SUB_MCH_REQUIRED))
        }
        None => {}
        Some(_) if hosted.sub_merchants.is_empty() => {
            return Err(Rejection::Return(SUB_MCH_NOT_ALLOWED))
        }
        Some(sub) => {
            // No public record of the live code for a sub merchant bound to
            // another provider: INVALID_REQUEST is WeChat's code for a
            // well-formed request against the business rules.
            let apps = hosted.sub_merchants.get(sub.as_str()).ok_or_else(|| {
                Rejection::business("INVALID_REQUEST", "sub_mch_id与mch_id不匹配")
            })?;
            if sub_app_id.is_some_and(|a| !apps.contains(a.as_str())) {
                return Err(Rejection::business(
                    "INVALID_REQUEST",
                    "sub_appid与sub_mch_id不匹配",
                ));
            }
        }
    }
    Ok(Caller {
        owner: Owner {
            mch_id: mch_id.to_owned(),
            sub_mch_id: sub_mch_id.cloned(),
        },
        app_id: appid.to_owned(),
        sub_app_id: sub_app_id.cloned(),
    })
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
    let sub_openid = optional(fields, "sub_openid");
    let sub_app_id = optional(fields, "sub_appid");
    // sub_openid is the payer under sub_appid, so it means nothing without one.
    if !sub_openid.is_empty() && sub_app_id.is_empty() {
        return Err(Rejection::lack("sub_appid"));
    }
    let product_id = optional(fields, "product_id");
    if product_id.len() > 32 {
        return Err(Rejection::param("product_id参数长度有误"));
    }
    match trade_type {
        "JSAPI" if openid.is_empty() && sub_openid.is_empty() => {
            return Err(Rejection::param(if sub_app_id.is_empty() {
                "JSAPI支付必须传openid"
            } else {
                "JSAPI支付必须传openid或sub_openid"
            }));
        }
        // A QR code is for one product (模式二: the merchant names it).
        "NATIVE" if product_id.is_empty() => return Err(Rejection::lack("product_id")),
        // H5 payments say where they come from, which WeChat checks.
        "MWEB" => h5_scene(fields)?,
        _ => {}
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
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(NewOrder {
        owner: Owner {
            mch_id: non_empty(fields, "mch_id")?.to_owned(),
            sub_mch_id: some(optional(fields, "sub_mch_id")),
        },
        app_id: non_empty(fields, "appid")?.to_owned(),
        sub_app_id: some(sub_app_id),
        sub_openid: sub_openid.to_owned(),
        product_id: product_id.to_owned(),
        out_trade_no,
        body: body.to_owned(),
        attach: attach.to_owned(),
        openid: openid.to_owned(),
        trade_type: trade_type.to_owned(),
        total_fee: total_fee.fen(),
        notify_url: notify_url.to_owned(),
        time_expire,
        sign_type,
        api_version: ApiVersion::V2,
        business,
    })
}

/// MWEB's `scene_info`: JSON with an `h5_info` object whose `type` is Wap,
/// IOS or Android (WeChat's three H5 scenes).
fn h5_scene(fields: &Fields) -> Result<(), Rejection> {
    let text = non_empty(fields, "scene_info")?;
    let bad = || Rejection::param("scene_info参数格式错误");
    let json: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let kind = json
        .get("h5_info")
        .and_then(|h5| h5.get("type"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(bad)?;
    if !matches!(kind, "Wap" | "IOS" | "Android") || text.len() > 256 {
        return Err(bad());
    }
    Ok(())
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
        api_version: ApiVersion::V2,
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

/// A reply to send: either unsigned return FAIL or a message signed with the
/// signer's key (`None`: the request named no account we host, so there is
/// no key to sign with and the business refusal goes out unsigned).
pub fn render(
    outcome: Result<Fields, Rejection>,
    signer: Option<&Signer>,
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
    reply.insert("nonce_str".into(), Nonce::generate().as_str().into());
    if let Some(signer) = signer {
        reply.insert("appid".into(), signer.app_id.clone());
        reply.insert("mch_id".into(), signer.mch_id.clone());
        if let Some(sub) = &signer.sub_mch_id {
            reply.insert("sub_mch_id".into(), sub.clone());
        }
        if let Some(sub_app) = &signer.sub_app_id {
            reply.insert("sub_appid".into(), sub_app.clone());
        }
        sign::sign_fields(&mut reply, &signer.api_key, sign_type);
    }
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
    use crate::accounts::{Account, SubMerchant};
    use wxpay_core::wechat::{ApiKey, Merchant};

    fn merchant() -> Merchant {
        Merchant {
            app_id: "wx0123456789abcdef".into(),
            mch_id: "1900000109".into(),
            api_key: ApiKey::parse("sandboxtestkey0123456789abcdefgh").expect("valid key"),
        }
    }

    /// The default merchant plus a pure provider (1900000200) for sub
    /// merchant 1900000201 with its mini program wx2222222222222222.
    fn registry() -> Registry {
        let provider = Merchant {
            app_id: "wx1111111111111111".into(),
            mch_id: "1900000200".into(),
            api_key: ApiKey::parse("providerkey0123456789abcdefghijk").expect("valid key"),
        };
        let sub = SubMerchant {
            sub_mch_id: "1900000201".into(),
            sub_app_id: Some("wx2222222222222222".into()),
        };
        Registry::new(&merchant(), &[Account::provider(provider, vec![sub])]).expect("valid")
    }

    fn provider_signed(pairs: &[(&str, &str)]) -> Fields {
        let mut f: Fields = [
            ("appid", "wx1111111111111111"),
            ("mch_id", "1900000200"),
            ("nonce_str", "abc"),
        ]
        .iter()
        .chain(pairs)
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        let key = ApiKey::parse("providerkey0123456789abcdefghijk").expect("valid key");
        sign::sign_fields(&mut f, &key, SignType::Md5);
        f
    }

    fn refusal<T>(r: Result<T, Rejection>) -> &'static str {
        match r {
            Err(Rejection::Business { code, .. }) => code,
            Err(Rejection::Return(msg)) => msg,
            Ok(_) => "OK",
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
        let m = registry();
        let good = signed(&order_fields(), SignType::Md5);
        let authenticate =
            |f: &Fields, m: &Registry, t| authenticate(f, m, t, Scope::Trade).map(|_| ());
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
    fn a_provider_speaks_for_its_own_sub_merchants_only() {
        let r = registry();
        let check = |pairs: &[(&str, &str)], scope| {
            refusal(authenticate(
                &provider_signed(pairs),
                &r,
                SignType::Md5,
                scope,
            ))
        };
        assert_eq!(check(&[("sub_mch_id", "1900000201")], Scope::Trade), "OK");
        assert_eq!(
            check(
                &[
                    ("sub_mch_id", "1900000201"),
                    ("sub_appid", "wx2222222222222222")
                ],
                Scope::Trade
            ),
            "OK"
        );
        assert_eq!(check(&[], Scope::Trade), SUB_MCH_REQUIRED);
        // The provider's whole bill needs no sub merchant.
        assert_eq!(check(&[], Scope::Bill), "OK");
        assert_eq!(
            check(&[("sub_mch_id", "1900000999")], Scope::Trade),
            "INVALID_REQUEST"
        );
        assert_eq!(
            check(
                &[
                    ("sub_mch_id", "1900000201"),
                    ("sub_appid", "wx3333333333333333")
                ],
                Scope::Trade
            ),
            "INVALID_REQUEST"
        );
        assert_eq!(
            check(&[("sub_appid", "wx2222222222222222")], Scope::Trade),
            "LACK_PARAMS"
        );
        // A direct merchant has no sub merchants at all.
        let mut direct = order_fields();
        direct.push(("sub_mch_id", "1900000201"));
        let direct = signed(&direct, SignType::Md5);
        assert_eq!(
            refusal(authenticate(&direct, &r, SignType::Md5, Scope::Trade)),
            SUB_MCH_NOT_ALLOWED
        );
        // The provider's key does not sign for the default merchant.
        let mut forged = provider_signed(&[]);
        forged.insert("mch_id".into(), "1900000109".into());
        forged.insert("appid".into(), "wx0123456789abcdef".into());
        assert_eq!(
            refusal(authenticate(&forged, &r, SignType::Md5, Scope::Trade)),
            "SIGNERROR"
        );
        let caller = authenticate(
            &provider_signed(&[("sub_mch_id", "1900000201")]),
            &r,
            SignType::Md5,
            Scope::Trade,
        )
        .expect("valid");
        assert_eq!(caller.owner.mch_id, "1900000200");
        assert_eq!(caller.owner.sub_mch_id.as_deref(), Some("1900000201"));
    }

    #[test]
    fn each_trade_type_needs_its_own_parameters() {
        let now = Utc::now();
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut all = order_fields();
            for (k, v) in pairs {
                all.retain(|(key, _)| key != k);
                if !v.is_empty() {
                    all.push((k, v));
                }
            }
            code(unified_order(
                &signed(&all, SignType::Md5),
                SignType::Md5,
                now,
                TimeDelta::zero(),
            ))
        };
        let scene =
            r#"{"h5_info":{"type":"Wap","wap_url":"https://shop.example","wap_name":"shop"}}"#;
        assert_eq!(
            check(&[("trade_type", "NATIVE"), ("openid", "")]),
            "LACK_PARAMS"
        );
        assert_eq!(
            check(&[
                ("trade_type", "NATIVE"),
                ("openid", ""),
                ("product_id", "P1")
            ]),
            "OK"
        );
        assert_eq!(check(&[("trade_type", "APP"), ("openid", "")]), "OK");
        assert_eq!(
            check(&[("trade_type", "MWEB"), ("openid", "")]),
            "LACK_PARAMS"
        );
        assert_eq!(
            check(&[("trade_type", "MWEB"), ("scene_info", scene)]),
            "OK"
        );
        for bad in [
            "not json",
            r#"{"h5_info":{}}"#,
            r#"{"h5_info":{"type":"Car"}}"#,
        ] {
            assert_eq!(
                check(&[("trade_type", "MWEB"), ("scene_info", bad)]),
                "PARAM_ERROR",
                "{bad}"
            );
        }
        // JSAPI in service-provider mode: sub_openid under sub_appid instead of openid.
        assert_eq!(
            check(&[
                ("openid", ""),
                ("sub_openid", "os1"),
                ("sub_appid", "wx2222222222222222")
            ]),
            "OK"
        );
        assert_eq!(
            check(&[("openid", ""), ("sub_openid", "os1")]),
            "LACK_PARAMS"
        );
        assert_eq!(
            check(&[("openid", ""), ("sub_appid", "wx2222222222222222")]),
            "PARAM_ERROR"
        );
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
        let signer = Signer::for_request(&signed(&order_fields(), SignType::Md5), &registry())
            .expect("a hosted mch_id");
        let fail = render(
            Err(Rejection::Return("SIGNERROR")),
            Some(&signer),
            SignType::Md5,
        );
        assert_eq!(fail.len(), 2);
        assert!(!fail.contains_key("sign"));
        let ok = render(Ok(Fields::new()), Some(&signer), SignType::HmacSha256);
        assert_eq!(ok.get("sign_type").map(String::as_str), Some("HMAC-SHA256"));
        assert_eq!(sign::verify(&ok, &m.api_key, SignType::HmacSha256), Ok(()));
        // An unknown mch_id has no key: its refusal cannot be signed.
        let unknown = render(
            Err(Rejection::business("MCHID_NOT_EXIST", "商户号不存在")),
            None,
            SignType::Md5,
        );
        assert_eq!(
            unknown.get("err_code").map(String::as_str),
            Some("MCHID_NOT_EXIST")
        );
        assert!(!unknown.contains_key("sign"));
        let mut forged = ok.clone();
        forge_signature(&mut forged);
        assert!(sign::verify(&forged, &m.api_key, SignType::HmacSha256).is_err());
    }
}
