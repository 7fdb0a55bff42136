//! WeChat's side of the v3 wire protocol: how a request's `Authorization` is
//! checked (scheme, merchant, API certificate serial, timestamp window,
//! RSA-SHA256 over `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n`), how a placing
//! request is checked and becomes a [`NewOrder`], what a query answers for an
//! order, how every answer and notification is signed, and WeChat's v3 errors
//! (`{code, message}` with their HTTP statuses). Refund requests, answers and
//! notification resources are in `refunds`, the trade bill request in `bills`. Pure: no I/O and no clock of
//! its own, so each rule is testable alone; the signing and verifying
//! primitives and the JSON bodies are core's (`wxpay_core::wechat::v3`).

use std::net::IpAddr;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::{json, Value};
use wxpay_core::{
    domain::{Nonce, OrderStatus, OutTradeNo},
    wechat::{
        china_time,
        v3::{
            models::{ErrorBody, OrderAmount, Payer, PlaceOrder, Transaction, TransactionAmount},
            sign::{request_message, Authorization},
            verify, KeyError, MerchantSigner, MAX_CLOCK_SKEW_SECONDS, SCHEME,
        },
        ApiVersion, Fields, SignType,
    },
};

use crate::{
    accounts::{Hosted, Owner, Registry},
    orders::{NewOrder, SandboxOrder},
    wechat_keys::KeyRing,
};

/// A v3 error answer: an HTTP status and WeChat's `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl V3Error {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 PARAM_ERROR: a field missing, malformed or out of its limits.
    pub fn param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }

    /// 400 INVALID_REQUEST: well-formed, but against the rules of the call.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 401 SIGN_ERROR: the request's signature (or what it names) is not right.
    pub fn sign(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
    }

    /// 404 ORDER_NOT_EXIST.
    pub fn order_not_exist() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
    }

    /// 404 RESOURCE_NOT_EXISTS: the order a refund names, or the refund a
    /// query names, is not the caller's (or does not exist).
    pub fn resource_not_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", message)
    }

    /// 403 NOT_ENOUGH: the merchant's balance cannot cover a refund.
    pub fn not_enough() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "NOT_ENOUGH",
            "基本账户余额不足，请充值后重新发起",
        )
    }

    /// 400 NO_STATEMENT_EXIST: no bill for that day (no trades).
    pub fn no_statement() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "账单文件不存在，请检查请求的账单日期是否正确（当日无交易不生成账单）",
        )
    }

    /// 400 ORDERPAID: placing or closing an order that is paid.
    pub fn order_paid() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付")
    }

    /// 400 ORDER_CLOSED: placing or closing an order that is closed.
    pub fn order_closed() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭")
    }

    /// 403 OUT_TRADE_NO_USED: the number is another order's.
    pub fn out_trade_no_used(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "OUT_TRADE_NO_USED", message)
    }

    /// 500 SYSTEM_ERROR: retry with the same request.
    pub fn system_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统异常，请稍后重试",
        )
    }

    /// 429 FREQUENCY_LIMITED: retry later.
    pub fn frequency_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "频率超限，请降低请求频率",
        )
    }

    /// 400 APPID_MCHID_NOT_MATCH.
    fn appid_mchid() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "AppID和mch_id不匹配",
        )
    }

    /// 404 NOT_FOUND: no such interface (an unknown trade type in the path).
    pub fn no_interface() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "请求的接口不存在")
    }

    /// The JSON body WeChat sends with it.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message.clone(),
        };
        // Two strings always serialize.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// A request as `authenticate` reads it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path and query exactly as sent (what the merchant signed).
    pub uri: &'a str,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// WeChat's word for an `Authorization` it cannot read.
const AUTHORIZATION_FORMAT: &str =
    "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》";

/// Checks the request's `Authorization` as WeChat does and returns the mch_id
/// it speaks for: the scheme, a v3 merchant WeChat holds an API key of, that
/// key's serial, a timestamp within five minutes of `now`, a nonce, and the
/// RSA-SHA256 signature over what was sent. Every failure is 401 SIGN_ERROR.
pub fn authenticate(
    request: &SignedRequest<'_>,
    keys: &KeyRing,
    now: DateTime<Utc>,
) -> Result<String, V3Error> {
    let header = request
        .authorization
        .ok_or_else(|| V3Error::sign("缺少Authorization请求头"))?;
    if !header.starts_with(SCHEME) {
        return Err(V3Error::sign(format!(
            "{AUTHORIZATION_FORMAT}（认证类型须为{SCHEME}）"
        )));
    }
    let auth = Authorization::parse(header).ok_or_else(|| V3Error::sign(AUTHORIZATION_FORMAT))?;
    let merchant = keys.merchant(&auth.mch_id).ok_or_else(|| {
        V3Error::sign(format!(
            "商户号{}未开通APIv3（沙箱：不是托管的v3商户）",
            short(&auth.mch_id)
        ))
    })?;
    let key = merchant
        .merchant_key
        .as_ref()
        .ok_or_else(|| V3Error::sign("商户API证书不存在（沙箱：尚未签发或登记商户API密钥）"))?;
    if !key.id().eq_ignore_ascii_case(&auth.serial_no) {
        return Err(V3Error::sign(format!(
            "商户证书序列号{}有误，请检查",
            short(&auth.serial_no)
        )));
    }
    let skew = now.timestamp().saturating_sub(auth.timestamp);
    if skew.saturating_abs() >= MAX_CLOCK_SKEW_SECONDS {
        return Err(V3Error::sign(
            "Http头Authorization中的timestamp与当前时间相差超过5分钟",
        ));
    }
    if auth.nonce.is_empty() || auth.nonce.len() > 32 {
        return Err(V3Error::sign("Http头Authorization中的nonce_str长度有误"));
    }
    // What the merchant signed is text; a body that is not cannot verify.
    let body =
        std::str::from_utf8(request.body).map_err(|_| V3Error::sign("错误的签名，验签失败"))?;
    let message = request_message(
        request.method,
        request.uri,
        auth.timestamp,
        &auth.nonce,
        body,
    );
    if !key.verifies(message.as_bytes(), &auth.signature) {
        return Err(V3Error::sign("错误的签名，验签失败"));
    }
    Ok(auth.mch_id)
}

/// At most 64 characters of something a request said, for a message.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The request names the merchant that signed it (`mchid`, or `sp_mchid` on
/// the partner endpoints): one merchant cannot act for another.
pub fn same_merchant(named: Option<&str>, field: &str, signed_by: &str) -> Result<(), V3Error> {
    match named {
        None | Some("") => Err(V3Error::param(format!(
            "输入源“{field}”映射到字段“商户号”必填性规则校验失败，此字段为必填项"
        ))),
        Some(m) if m == signed_by => Ok(()),
        Some(_) => Err(V3Error::sign(format!(
            "{field}与Authorization中的mchid不一致"
        ))),
    }
}

/// The answer's signature headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSignature {
    pub serial: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl ResponseSignature {
    /// The headers, names as WeChat writes them.
    pub fn headers(&self) -> [(&'static str, &str); 5] {
        [
            ("Wechatpay-Serial", self.serial.as_str()),
            ("Wechatpay-Timestamp", self.timestamp.as_str()),
            ("Wechatpay-Nonce", self.nonce.as_str()),
            ("Wechatpay-Signature", self.signature.as_str()),
            ("Wechatpay-Signature-Type", SCHEME),
        ]
    }
}

/// Signs `body` as WeChat signs answers and notifications: RSA-SHA256 over
/// `TIMESTAMP\nNONCE\nBODY\n` with `signer`, named by its id. `forged` makes
/// a well-formed signature over something else (the `bad_signature` fault):
/// it must be refused by whoever checks it.
pub fn sign(
    signer: &MerchantSigner,
    body: &[u8],
    now: DateTime<Utc>,
    forged: bool,
) -> Result<ResponseSignature, KeyError> {
    let timestamp = now.timestamp().to_string();
    let nonce = Nonce::generate().as_str().to_owned();
    let mut message = verify::message(&timestamp, &nonce, body);
    if forged {
        message.extend_from_slice(b"forged");
    }
    Ok(ResponseSignature {
        serial: signer.serial_no().to_owned(),
        signature: signer.sign(&message)?,
        timestamp,
        nonce,
    })
}

/// The four ways to pay, as the path names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeKind {
    Jsapi,
    Native,
    App,
    H5,
}

impl TradeKind {
    pub fn from_path(s: &str) -> Option<Self> {
        match s {
            "jsapi" => Some(Self::Jsapi),
            "native" => Some(Self::Native),
            "app" => Some(Self::App),
            "h5" => Some(Self::H5),
            _ => None,
        }
    }

    /// The trade_type WeChat records (H5 is MWEB in both versions).
    pub fn trade_type(self) -> &'static str {
        match self {
            Self::Jsapi => "JSAPI",
            Self::Native => "NATIVE",
            Self::App => "APP",
            Self::H5 => "MWEB",
        }
    }
}

/// Which endpoint family: the direct merchant's or the service provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Direct,
    Partner,
}

/// The checks a placing request gets once its signature is good, and the
/// order it asks for. `signed_by` is the mch_id its `Authorization` named;
/// `min_expire` how far ahead of `now` a `time_expire` must be.
pub fn place(
    kind: TradeKind,
    family: Family,
    body: &[u8],
    signed_by: &str,
    registry: &Registry,
    now: DateTime<Utc>,
    min_expire: TimeDelta,
) -> Result<NewOrder, V3Error> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| V3Error::param(format!("请求体不是合法的JSON：{e}")))?;
    let request: PlaceOrder = serde_json::from_value(raw.clone())
        .map_err(|e| V3Error::param(format!("请求体参数错误：{e}")))?;
    // v3's partner JSAPI payer is `sp_openid` (under sp_appid) or `sub_openid`;
    // core's Payer has no `sp_openid`, so it is read from the JSON itself.
    let sp_openid = raw
        .pointer("/payer/sp_openid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (owner, app_id, sub_app_id) = placing_owner(&request, family, signed_by, registry)?;
    let out_trade_no = out_trade_no(&request.out_trade_no)?;
    if request.description.is_empty() || request.description.len() > 127 {
        return Err(V3Error::param("description长度须为1到127字节"));
    }
    if request.attach.as_deref().is_some_and(|a| a.len() > 128) {
        return Err(V3Error::param("attach长度不能超过128字节"));
    }
    let notify_url = checked_notify_url(&request.notify_url)?;
    let total = amount(&request.amount)?;
    let time_expire = match &request.time_expire {
        None => None,
        Some(t) => Some(time_expire(t, now, min_expire)?),
    };
    let payer = request.payer.clone().unwrap_or_default();
    let (openid, sub_openid) = match family {
        Family::Direct => {
            if payer.sub_openid.is_some() || sp_openid.is_some() {
                return Err(V3Error::param("直连商户的payer只有openid"));
            }
            (payer.openid.clone().unwrap_or_default(), String::new())
        }
        Family::Partner => {
            if payer.openid.is_some() {
                return Err(V3Error::param(
                    "服务商模式的payer为sp_openid或sub_openid，不接受openid",
                ));
            }
            (
                sp_openid.clone().unwrap_or_default(),
                payer.sub_openid.clone().unwrap_or_default(),
            )
        }
    };
    if !sub_openid.is_empty() && sub_app_id.is_none() {
        return Err(V3Error::param("传sub_openid时须传sub_appid"));
    }
    match kind {
        TradeKind::Jsapi if openid.is_empty() && sub_openid.is_empty() => {
            return Err(V3Error::param(match family {
                Family::Direct => "JSAPI下单须传payer.openid",
                Family::Partner => "JSAPI下单须传payer.sp_openid或payer.sub_openid",
            }));
        }
        TradeKind::H5 => h5_scene(&request)?,
        _ => {}
    }
    if let Some(scene) = &request.scene_info {
        if scene.payer_client_ip.parse::<IpAddr>().is_err() {
            return Err(V3Error::param("scene_info.payer_client_ip格式错误"));
        }
    }
    // A repeat is "the same order" when everything it asks is the same: the
    // body as core's model writes it (so spacing and field order do not
    // count), the trade type and the partner payer.
    let canonical = json!({
        "kind": kind.trade_type(),
        "request": request,
        "sp_openid": sp_openid,
    });
    let business = Fields::from([("v3".to_owned(), canonical.to_string())]);
    Ok(NewOrder {
        owner,
        app_id,
        sub_app_id,
        sub_openid,
        product_id: String::new(),
        out_trade_no,
        body: request.description,
        attach: request.attach.unwrap_or_default(),
        openid,
        trade_type: kind.trade_type().to_owned(),
        total_fee: total,
        notify_url: notify_url.to_owned(),
        time_expire,
        // v3 signs nothing with a v2 key; the field is v2's.
        sign_type: SignType::Md5,
        api_version: ApiVersion::V3,
        business,
    })
}

/// Who a placing request is for, by family: `(owner, appid, sub_appid)`.
fn placing_owner(
    request: &PlaceOrder,
    family: Family,
    signed_by: &str,
    registry: &Registry,
) -> Result<(Owner, String, Option<String>), V3Error> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let required = |v: &Option<String>, field: &str| {
        nonempty(v).ok_or_else(|| {
            V3Error::param(format!(
                "输入源“/body/{field}”映射到字段“{field}”必填性规则校验失败，此字段为必填项"
            ))
        })
    };
    match family {
        Family::Direct => {
            for (field, value) in [
                ("sp_appid", &request.sp_appid),
                ("sp_mchid", &request.sp_mchid),
                ("sub_appid", &request.sub_appid),
                ("sub_mchid", &request.sub_mchid),
            ] {
                if value.is_some() {
                    return Err(V3Error::param(format!(
                        "{field}是服务商接口的字段（/v3/pay/partner/transactions/…）"
                    )));
                }
            }
            let app_id = required(&request.appid, "appid")?;
            same_merchant(request.mchid.as_deref(), "/body/mchid", signed_by)?;
            let owner = owner_of(registry, signed_by, &app_id, None, None)?;
            Ok((owner, app_id, None))
        }
        Family::Partner => {
            for (field, value) in [("appid", &request.appid), ("mchid", &request.mchid)] {
                if value.is_some() {
                    return Err(V3Error::param(format!(
                        "{field}是直连商户接口的字段，服务商接口用sp_{field}"
                    )));
                }
            }
            let app_id = required(&request.sp_appid, "sp_appid")?;
            same_merchant(request.sp_mchid.as_deref(), "/body/sp_mchid", signed_by)?;
            let sub_mchid = required(&request.sub_mchid, "sub_mchid")?;
            let sub_appid = nonempty(&request.sub_appid);
            let owner = owner_of(
                registry,
                signed_by,
                &app_id,
                Some(&sub_mchid),
                sub_appid.as_deref(),
            )?;
            Ok((owner, app_id, sub_appid))
        }
    }
}

/// The owner a request acts for, checked against the hosted account: the
/// appid is the account's (when given), a direct call is from a merchant that
/// trades for itself, and a partner call names a sub merchant (and sub_appid)
/// bound to the provider. `sub` is `None` on the direct endpoints.
pub fn owner_of(
    registry: &Registry,
    mch_id: &str,
    app_id: &str,
    sub_mchid: Option<&str>,
    sub_appid: Option<&str>,
) -> Result<Owner, V3Error> {
    let hosted = hosted(registry, mch_id)?;
    if !app_id.is_empty() && !hosted.app_ids.contains(app_id) {
        return Err(V3Error::appid_mchid());
    }
    sub_merchant_of(hosted, sub_mchid, sub_appid)
}

/// The owner a query or close names (no appid in those requests).
pub fn owner_named(
    registry: &Registry,
    mch_id: &str,
    sub_mchid: Option<&str>,
) -> Result<Owner, V3Error> {
    sub_merchant_of(hosted(registry, mch_id)?, sub_mchid, None)
}

fn hosted<'a>(registry: &'a Registry, mch_id: &str) -> Result<&'a Hosted, V3Error> {
    // Authentication already found the merchant; the registry holds every one.
    registry
        .get(mch_id)
        .ok_or_else(|| V3Error::sign("商户号不存在"))
}

fn sub_merchant_of(
    hosted: &Hosted,
    sub_mchid: Option<&str>,
    sub_appid: Option<&str>,
) -> Result<Owner, V3Error> {
    match sub_mchid {
        None if !hosted.direct => Err(V3Error::invalid(
            "服务商商户号须使用服务商接口（/v3/pay/partner/transactions/…）",
        )),
        None => Ok(Owner {
            mch_id: hosted.mch_id.clone(),
            sub_mch_id: None,
        }),
        Some(_) if hosted.sub_merchants.is_empty() => Err(V3Error::invalid(
            "普通商户不能使用服务商接口（沙箱：该商户号没有特约商户）",
        )),
        Some(sub) => {
            // No public record of the live code for a sub merchant bound to
            // another provider: INVALID_REQUEST, as the v2 side answers.
            let apps = hosted
                .sub_merchants
                .get(sub)
                .ok_or_else(|| V3Error::invalid("sub_mchid与sp_mchid不匹配"))?;
            if sub_appid.is_some_and(|a| !apps.contains(a)) {
                return Err(V3Error::invalid("sub_appid与sub_mchid不匹配"));
            }
            Ok(Owner {
                mch_id: hosted.mch_id.clone(),
                sub_mch_id: Some(sub.to_owned()),
            })
        }
    }
}

/// v3's `out_trade_no`: 6 to 32 of letters, digits and `_-|*`.
pub fn out_trade_no(s: &str) -> Result<String, V3Error> {
    match OutTradeNo::parse(s) {
        Ok(no) if s.len() >= 6 => Ok(no.as_str().to_owned()),
        _ => Err(V3Error::param(
            "out_trade_no须为6到32位数字、大小写字母或_-|*",
        )),
    }
}

/// An http(s) URL of at most 256 bytes without a query, as v3 accepts for
/// notify_url ("不能携带参数"). WeChat wants https on the internet; the
/// sandbox also takes http, to reach a local notify handler.
fn checked_notify_url(url: &str) -> Result<&str, V3Error> {
    let scheme_ok = ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if !scheme_ok || url.len() > 256 || url.contains('?') {
        return Err(V3Error::param(
            "notify_url须为不带参数的http(s)地址，最长256字节",
        ));
    }
    Ok(url)
}

fn amount(amount: &OrderAmount) -> Result<i64, V3Error> {
    if amount.total <= 0 {
        return Err(V3Error::param("amount.total须为正整数（单位：分）"));
    }
    if !matches!(amount.currency.as_deref(), None | Some("CNY")) {
        return Err(V3Error::param("amount.currency须为CNY"));
    }
    Ok(amount.total)
}

/// WeChat's words for a `time_expire` too close to now.
const EXPIRE_TOO_SHORT: &str = "time_expire时间过短，刷卡至少1分钟，其他5分钟";

/// `time_expire`: RFC 3339 (WeChat writes +08:00), at least `min_expire`
/// ahead of `now` at whole seconds (what the field can say).
fn time_expire(
    text: &str,
    now: DateTime<Utc>,
    min_expire: TimeDelta,
) -> Result<DateTime<Utc>, V3Error> {
    let t = china_time::parse_rfc3339(text).ok_or_else(|| {
        V3Error::param("time_expire须为RFC 3339格式，如2018-06-08T10:34:56+08:00")
    })?;
    let now_seconds = now.with_nanosecond(0).unwrap_or(now);
    if t <= now || t - now_seconds < min_expire {
        return Err(V3Error::param(EXPIRE_TOO_SHORT));
    }
    Ok(t)
}

/// h5's `scene_info`: the payer's IP and `h5_info.type` (Wap, iOS or Android).
fn h5_scene(request: &PlaceOrder) -> Result<(), V3Error> {
    let scene = request
        .scene_info
        .as_ref()
        .ok_or_else(|| V3Error::param("H5下单须传scene_info"))?;
    let kind = scene.h5_info.as_ref().map(|h| h.kind.as_str());
    if !matches!(kind, Some("Wap" | "iOS" | "Android")) {
        return Err(V3Error::param(
            "scene_info.h5_info.type须为Wap、iOS或Android",
        ));
    }
    Ok(())
}

/// What a query answers for an order (and a payment notification carries,
/// sealed): the merchant's fields by family, the state, and once paid the
/// transaction, payer, time and amounts. A partner order's payer is
/// `sp_openid`/`sub_openid`, which core's `Payer` has no field for, so the
/// answer is built as JSON.
pub fn transaction(order: &SandboxOrder) -> Value {
    let paid = matches!(order.status, OrderStatus::Success | OrderStatus::Refund);
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let partner = order.owner.sub_mch_id.is_some();
    let mut t = Transaction {
        out_trade_no: order.out_trade_no.clone(),
        trade_state: order.status.as_str().to_owned(),
        trade_state_desc: trade_state_desc(order),
        attach: some(&order.attach),
        amount: Some(TransactionAmount {
            total: order.total_fee,
            payer_total: paid.then_some(order.total_fee),
            currency: Some("CNY".to_owned()),
            payer_currency: paid.then(|| "CNY".to_owned()),
        }),
        ..Transaction::default()
    };
    if partner {
        t.sp_appid = Some(order.app_id.clone());
        t.sp_mchid = Some(order.owner.mch_id.clone());
        t.sub_mchid = order.owner.sub_mch_id.clone();
        t.sub_appid = order.sub_app_id.clone();
    } else {
        t.appid = Some(order.app_id.clone());
        t.mchid = Some(order.owner.mch_id.clone());
    }
    if !matches!(order.status, OrderStatus::NotPay | OrderStatus::Closed) {
        t.trade_type = Some(order.trade_type.clone());
    }
    if paid {
        t.transaction_id = order.transaction_id.clone();
        t.bank_type = Some(
            order
                .bank_type
                .clone()
                .unwrap_or_else(|| "OTHERS".to_owned()),
        );
        t.success_time = order.time_end.map(china_time::format_rfc3339);
        if !partner {
            t.payer = Some(Payer {
                openid: some(&order.openid),
                sub_openid: None,
            });
        }
    }
    // A struct of strings and integers always serializes.
    let mut value = serde_json::to_value(&t).unwrap_or(Value::Null);
    if paid && partner {
        let mut payer = serde_json::Map::new();
        if let Some(o) = some(&order.openid) {
            payer.insert("sp_openid".to_owned(), Value::String(o));
        }
        if let Some(o) = some(&order.sub_openid) {
            payer.insert("sub_openid".to_owned(), Value::String(o));
        }
        if let Value::Object(map) = &mut value {
            map.insert("payer".to_owned(), Value::Object(payer));
        }
    }
    value
}

fn trade_state_desc(order: &SandboxOrder) -> String {
    match (order.status, &order.failure) {
        (OrderStatus::PayError, Some((_, des))) => format!("支付失败，{des}"),
        (OrderStatus::Success, _) => "支付成功".to_owned(),
        (OrderStatus::Refund, _) => "转入退款".to_owned(),
        (OrderStatus::NotPay, _) => "订单未支付".to_owned(),
        (OrderStatus::Closed, _) => "订单已关闭".to_owned(),
        (OrderStatus::Revoked, _) => "已撤销（付款码支付）".to_owned(),
        (OrderStatus::UserPaying, _) => "用户支付中，需要输入密码".to_owned(),
        (OrderStatus::PayError, None) => "支付失败".to_owned(),
    }
}

mod bills;
mod refunds;

pub use bills::trade_bill_request;
pub use refunds::{
    refund_answer, refund_error, refund_event, refund_owner, refund_request, refund_resource,
};

#[cfg(test)]
mod tests;
