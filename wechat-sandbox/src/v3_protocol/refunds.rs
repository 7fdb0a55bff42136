//! The v3 refund on the wire, WeChat's side: a `POST
//! /v3/refund/domestic/refunds` body checked and turned into the same
//! [`NewRefund`] a v2 request becomes (one refund model whatever the dialect),
//! who a refund call acts for (`sub_mchid` for a service provider), what an
//! answer (`RefundAnswer`, `status`) and a notification's resource
//! (`RefundResource`, `refund_status`) say of a refund, and which v3 error
//! each refusal of the order book is. Pure, like its parent.

use wxpay_core::{
    domain::{Fee, OutTradeNo, TransactionId},
    wechat::{
        china_time,
        v3::models::{
            RefundAmount, RefundAnswer, RefundRequest, RefundResource, REFUND_ABNORMAL,
            REFUND_CLOSED, REFUND_SUCCESS,
        },
        ApiVersion, SignType,
    },
};

use super::{checked_notify_url, hosted, sub_merchant_of, V3Error};
use crate::{
    accounts::{Owner, Registry},
    orders::{NewRefund, RefundError, RefundStatus, SandboxRefund},
    protocol::{OrderRef, UNSETTLED_FUNDS},
};

/// Where a refund to the payer's balance lands, as v3 writes it.
pub const USER_RECEIVED_ACCOUNT: &str = "支付用户零钱";

/// v3's `reason`: at most 80 characters.
const MAX_REASON_CHARS: usize = 80;

/// The checks a refund request gets once its signature is good, and the
/// refund it asks for, for the owner it names. `signed_by` is the mch_id its
/// `Authorization` named.
pub fn refund_request(
    body: &[u8],
    signed_by: &str,
    registry: &Registry,
) -> Result<(Owner, NewRefund), V3Error> {
    let request: RefundRequest =
        serde_json::from_slice(body).map_err(|e| V3Error::param(format!("请求体参数错误：{e}")))?;
    let owner = refund_owner(registry, signed_by, request.sub_mchid.as_deref())?;
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    // WeChat takes transaction_id first when both are given.
    let order = match (
        nonempty(&request.transaction_id),
        nonempty(&request.out_trade_no),
    ) {
        (Some(tid), _) => TransactionId::parse(&tid)
            .map(|_| OrderRef::TransactionId(tid))
            .map_err(|_| V3Error::param("transaction_id格式错误"))?,
        (None, Some(no)) => OutTradeNo::parse(&no)
            .map(|n| OrderRef::OutTradeNo(n.as_str().to_owned()))
            .map_err(|_| V3Error::param("out_trade_no须为1到32位数字、大小写字母或_-|*"))?,
        (None, None) => {
            return Err(V3Error::param("transaction_id和out_trade_no必须二选一"));
        }
    };
    let out_refund_no = out_refund_no(&request.out_refund_no)?;
    let reason = request.reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(V3Error::param("reason长度不能超过80个字符"));
    }
    let notify_url = match nonempty(&request.notify_url) {
        None => None,
        Some(url) => Some(checked_notify_url(&url)?.to_owned()),
    };
    let (total_fee, refund_fee) = amounts(&request.amount)?;
    Ok((
        owner,
        NewRefund {
            order,
            out_refund_no,
            total_fee,
            refund_fee,
            refund_desc: reason,
            // v3 names the source `funds_account`; both dialects' default is
            // the unsettled funds, kept in v2's words so that a repeat in
            // either dialect is the same refund.
            refund_account: UNSETTLED_FUNDS.to_owned(),
            notify_url,
            // v3 signs nothing with a v2 key; the field is v2's.
            sign_type: SignType::Md5,
            api_version: ApiVersion::V3,
        },
    ))
}

/// Who a refund call (apply or query) acts for: the signer itself, or the
/// sub merchant `sub_mchid` names, which a service provider must name.
pub fn refund_owner(
    registry: &Registry,
    signed_by: &str,
    sub_mchid: Option<&str>,
) -> Result<Owner, V3Error> {
    let hosted = hosted(registry, signed_by)?;
    match sub_mchid.filter(|s| !s.is_empty()) {
        None if !hosted.direct => Err(V3Error::param("服务商商户号须传sub_mchid（特约商户号）")),
        sub => sub_merchant_of(hosted, sub, None),
    }
}

/// `out_refund_no`: 1 to 64 of `[0-9A-Za-z_\-|*@]`, as in v2.
fn out_refund_no(s: &str) -> Result<String, V3Error> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(V3Error::param(
            "out_refund_no须为1到64位数字、大小写字母或_-|*@",
        ))
    }
}

/// `(total, refund)` in fen: both positive whole fen within a payment's
/// limit, in CNY. Whether they fit the order is the order book's to say.
fn amounts(amount: &RefundAmount) -> Result<(i64, i64), V3Error> {
    let total =
        Fee::new(amount.total).map_err(|_| V3Error::param("amount.total须为正整数（单位：分）"))?;
    let refund = Fee::new(amount.refund)
        .map_err(|_| V3Error::param("amount.refund须为正整数（单位：分）"))?;
    if !matches!(amount.currency.as_deref(), None | Some("CNY")) {
        return Err(V3Error::param("amount.currency须为CNY"));
    }
    Ok((total.fen(), refund.fen()))
}

/// The v3 error for each reason the order book refuses a refund. An unknown
/// order is 404 RESOURCE_NOT_EXISTS, as WeChat answers; every business rule
/// is 400 INVALID_REQUEST with a message naming it (WeChat's code for "well
/// formed, against the rules"; v2's finer codes have no v3 counterparts).
pub fn refund_error(e: RefundError) -> V3Error {
    match e {
        RefundError::OrderNotFound => V3Error::resource_not_exists("订单不存在"),
        RefundError::TransactionNotFound => {
            V3Error::resource_not_exists("订单不存在（无效的transaction_id）")
        }
        RefundError::NotPaid => V3Error::invalid("订单状态错误：订单未支付或已关闭，不能退款"),
        RefundError::Overdue => V3Error::invalid("订单已经超过退款期限"),
        RefundError::TotalFeeMismatch => V3Error::invalid("订单金额与实际支付金额不一致"),
        RefundError::TooManyRefunds => V3Error::invalid("订单退款次数已达上限50次"),
        RefundError::FullyRefunded => V3Error::invalid("订单已全额退款"),
        RefundError::ExceedsPaid => {
            V3Error::invalid("申请退款金额超过订单可退金额（累计退款金额不能大于支付金额）")
        }
        RefundError::AmountsDiffer | RefundError::OutRefundNoReused => {
            V3Error::invalid("商户退款单号已存在，请求参数与原退款不一致")
        }
    }
}

/// The refund's amounts as v3 writes them: no coupons in the sandbox, so the
/// payer paid and gets back all of it.
fn refund_amount(refund: &SandboxRefund, currency: bool) -> RefundAmount {
    RefundAmount {
        refund: refund.refund_fee,
        total: refund.total_fee,
        payer_total: Some(refund.total_fee),
        payer_refund: Some(refund.refund_fee),
        currency: currency.then(|| "CNY".to_owned()),
    }
}

/// What the refund call and the refund query answer for a refund.
pub fn refund_answer(refund: &SandboxRefund) -> RefundAnswer {
    RefundAnswer {
        refund_id: refund.refund_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        channel: Some("ORIGINAL".to_owned()),
        user_received_account: Some(USER_RECEIVED_ACCOUNT.to_owned()),
        success_time: success_time(refund),
        create_time: Some(china_time::format_rfc3339(refund.created_at)),
        status: refund.status.v3_str().to_owned(),
        funds_account: Some("UNSETTLED".to_owned()),
        amount: refund_amount(refund, true),
    }
}

/// The sealed resource of a refund notification: the merchant (`mchid`, or
/// `sp_mchid` and `sub_mchid` for a sub merchant's order) and the refund.
pub fn refund_resource(refund: &SandboxRefund, owner: &Owner) -> RefundResource {
    let partner = owner.sub_mch_id.is_some();
    RefundResource {
        mchid: (!partner).then(|| owner.mch_id.clone()),
        sp_mchid: partner.then(|| owner.mch_id.clone()),
        sub_mchid: owner.sub_mch_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        refund_status: refund.status.v3_str().to_owned(),
        success_time: success_time(refund),
        user_received_account: Some(USER_RECEIVED_ACCOUNT.to_owned()),
        amount: refund_amount(refund, false),
    }
}

/// The notification of a settled refund: its `event_type` and `summary`;
/// `None` while it is PROCESSING (nothing to announce).
pub fn refund_event(status: RefundStatus) -> Option<(&'static str, &'static str)> {
    match status {
        RefundStatus::Processing => None,
        RefundStatus::Success => Some((REFUND_SUCCESS, "退款成功")),
        RefundStatus::Change => Some((REFUND_ABNORMAL, "退款异常")),
        RefundStatus::RefundClose => Some((REFUND_CLOSED, "退款关闭")),
    }
}

fn success_time(refund: &SandboxRefund) -> Option<String> {
    match refund.status {
        RefundStatus::Success => refund.success_time.map(china_time::format_rfc3339),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use wxpay_core::wechat::{ApiKey, Merchant};

    use super::*;
    use crate::accounts::{Account, SubMerchant};

    const DIRECT: &str = "1900000300";
    const PROVIDER: &str = "1900000400";

    fn registry() -> Registry {
        let merchant = |mch_id: &str, app_id: &str| Merchant {
            app_id: app_id.into(),
            mch_id: mch_id.into(),
            api_key: ApiKey::unguessable(),
        };
        Registry::new(
            &merchant("1900000109", "wx0123456789abcdef"),
            &[
                Account::direct(merchant(DIRECT, "wx3333333333333333")),
                Account::provider(
                    merchant(PROVIDER, "wx4444444444444444"),
                    vec![SubMerchant {
                        sub_mch_id: "1900000401".into(),
                        sub_app_id: None,
                    }],
                ),
            ],
        )
        .expect("a registry")
    }

    fn parse(signed_by: &str, body: serde_json::Value) -> Result<(Owner, NewRefund), V3Error> {
        refund_request(body.to_string().as_bytes(), signed_by, &registry())
    }

    #[test]
    fn a_refund_request_becomes_the_same_refund_a_v2_one_would() {
        let (owner, new) = parse(
            DIRECT,
            serde_json::json!({
                "out_trade_no": "order-1", "out_refund_no": "r-1", "reason": "退货",
                "notify_url": "https://shop.example/wechat/v3/refund/notify",
                "amount": {"refund": 30, "total": 100, "currency": "CNY"},
            }),
        )
        .expect("accepted");
        assert_eq!((owner.mch_id.as_str(), owner.sub_mch_id), (DIRECT, None));
        assert_eq!(new.order, OrderRef::OutTradeNo("order-1".into()));
        assert_eq!((new.total_fee, new.refund_fee), (100, 30));
        assert_eq!(new.refund_desc, "退货");
        assert_eq!(new.refund_account, UNSETTLED_FUNDS);
        assert_eq!(new.api_version, ApiVersion::V3);
    }

    #[test]
    fn bad_amounts_and_missing_names_are_param_errors() {
        let code = |body| parse(DIRECT, body).map(|_| ()).map_err(|e| e.code);
        for amount in [
            serde_json::json!({"refund": 0, "total": 100}),
            serde_json::json!({"refund": -1, "total": 100}),
            serde_json::json!({"refund": 1, "total": 0}),
            serde_json::json!({"refund": 1, "total": 100, "currency": "USD"}),
        ] {
            let body =
                serde_json::json!({"out_trade_no": "o1", "out_refund_no": "r", "amount": amount});
            assert_eq!(code(body), Err("PARAM_ERROR"), "{amount}");
        }
        let no_order =
            serde_json::json!({"out_refund_no": "r", "amount": {"refund": 1, "total": 1}});
        assert_eq!(code(no_order), Err("PARAM_ERROR"));
        let bad_no = serde_json::json!({"out_trade_no": "o1", "out_refund_no": "r#1", "amount": {"refund": 1, "total": 1}});
        assert_eq!(code(bad_no), Err("PARAM_ERROR"));
    }

    #[test]
    fn a_provider_must_name_its_sub_merchant_and_only_its_own() {
        let body = |sub: Option<&str>| {
            let mut b = serde_json::json!({"out_trade_no": "o1", "out_refund_no": "r", "amount": {"refund": 1, "total": 1}});
            if let Some(sub) = sub {
                b["sub_mchid"] = serde_json::json!(sub);
            }
            b
        };
        assert_eq!(
            parse(PROVIDER, body(None)).map_err(|e| e.code).err(),
            Some("PARAM_ERROR")
        );
        let (owner, _) = parse(PROVIDER, body(Some("1900000401"))).expect("its sub merchant");
        assert_eq!(owner.sub_mch_id.as_deref(), Some("1900000401"));
        assert_eq!(
            parse(PROVIDER, body(Some("1900000499")))
                .map_err(|e| e.code)
                .err(),
            Some("INVALID_REQUEST")
        );
        assert_eq!(
            parse(DIRECT, body(Some("1900000401")))
                .map_err(|e| e.code)
                .err(),
            Some("INVALID_REQUEST")
        );
    }

    #[test]
    fn answers_and_resources_speak_v3s_statuses() {
        let now = Utc::now();
        let mut refund = SandboxRefund {
            out_refund_no: "r".into(),
            refund_id: "503".into(),
            out_trade_no: "o".into(),
            transaction_id: "4200".into(),
            total_fee: 100,
            refund_fee: 40,
            refund_desc: String::new(),
            refund_account: UNSETTLED_FUNDS.into(),
            notify_url: None,
            sign_type: SignType::Md5,
            api_version: ApiVersion::V3,
            status: RefundStatus::Processing,
            created_at: now,
            success_time: None,
            deliveries: Vec::new(),
        };
        let answer = refund_answer(&refund);
        assert_eq!(answer.status, "PROCESSING");
        assert_eq!(answer.success_time, None);
        assert!(answer.create_time.is_some_and(|t| t.ends_with("+08:00")));
        assert_eq!(
            (answer.amount.payer_total, answer.amount.payer_refund),
            (Some(100), Some(40))
        );
        refund.status = RefundStatus::Change;
        assert_eq!(refund_answer(&refund).status, "ABNORMAL");
        refund.status = RefundStatus::RefundClose;
        let owner = Owner {
            mch_id: PROVIDER.into(),
            sub_mch_id: Some("1900000401".into()),
        };
        let resource = refund_resource(&refund, &owner);
        assert_eq!(resource.refund_status, "CLOSED");
        assert_eq!(
            (
                resource.mchid,
                resource.sp_mchid.as_deref(),
                resource.sub_mchid.as_deref()
            ),
            (None, Some(PROVIDER), Some("1900000401"))
        );
        assert_eq!(
            refund_event(RefundStatus::RefundClose),
            Some((REFUND_CLOSED, "退款关闭"))
        );
        assert_eq!(refund_event(RefundStatus::Processing), None);
    }
}
