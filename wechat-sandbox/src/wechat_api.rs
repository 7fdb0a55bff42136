//! The WeChat Pay v2 endpoints: `/pay/unifiedorder`, `/pay/orderquery`,
//! `/pay/closeorder`, `/secapi/pay/refund`, `/pay/refundquery` and
//! `/pay/downloadbill`. Thin: apply an armed fault, check the request with
//! `protocol`, act on the order book, and write the signed reply (or, for the
//! bill, the file that `bill` builds). `/secapi/` is behind `client_auth`'s guard:
//! the merchant's client certificate over mutual TLS, as on the live API.

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use chrono::Utc;
use wxpay_core::{
    domain::OrderStatus,
    wechat::{china_time, Fields, SignType},
};

use crate::{
    bill, client_auth,
    faults::Fault,
    notify,
    orders::{CloseError, PlaceError, RefundError, SandboxOrder, SandboxRefund},
    protocol::{self, BillFailure, Caller, Rejection, Scope, Signer},
    state::AppState,
};

/// The endpoints; `state` is the one the `/secapi/` guard reads the merchant from.
pub fn routes(state: AppState) -> Router<AppState> {
    // Only routes that matched run the guard: an unknown path is a plain 404.
    let secapi = Router::new()
        .route("/secapi/pay/refund", post(refund).fallback(require_post))
        .route_layer(middleware::from_fn_with_state(
            state,
            client_auth::require_merchant_certificate,
        ));
    Router::new()
        .route(
            "/pay/unifiedorder",
            post(unified_order).fallback(require_post),
        )
        .route("/pay/orderquery", post(order_query).fallback(require_post))
        .route("/pay/closeorder", post(close_order).fallback(require_post))
        .route(
            "/pay/refundquery",
            post(refund_query).fallback(require_post),
        )
        .route(
            "/pay/downloadbill",
            post(download_bill).fallback(require_post),
        )
        .merge(secapi)
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    UnifiedOrder,
    OrderQuery,
    CloseOrder,
    Refund,
    RefundQuery,
}

async fn unified_order(State(state): State<AppState>, body: Bytes) -> Response {
    handle(state, Endpoint::UnifiedOrder, body).await
}

async fn order_query(State(state): State<AppState>, body: Bytes) -> Response {
    handle(state, Endpoint::OrderQuery, body).await
}

async fn close_order(State(state): State<AppState>, body: Bytes) -> Response {
    handle(state, Endpoint::CloseOrder, body).await
}

async fn refund(State(state): State<AppState>, body: Bytes) -> Response {
    handle(state, Endpoint::Refund, body).await
}

async fn refund_query(State(state): State<AppState>, body: Bytes) -> Response {
    handle(state, Endpoint::RefundQuery, body).await
}

/// downloadbill answers with the bill itself, or an unsigned return_code FAIL:
/// it has no business layer and no signed reply, so it has its own handler.
async fn download_bill(State(state): State<AppState>, body: Bytes) -> Response {
    // No signature to forge in a bill: a bad_signature fault waits for a signed call.
    let fault = state.faults().take_unsigned();
    if fault == Some(Fault::Timeout) {
        return hang_and_drop(&state).await;
    }
    let outcome = bill_outcome(&state, &body, fault == Some(Fault::SystemError));
    if fault == Some(Fault::ProcessThenTimeout) {
        return hang_and_drop(&state).await;
    }
    match outcome {
        Ok((bytes, content_type)) => {
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(failure) => {
            tracing::info!(?failure, "downloadbill refused");
            let mut reply = Fields::from([
                ("return_code".to_owned(), "FAIL".to_owned()),
                ("return_msg".to_owned(), failure.return_msg),
            ]);
            if let Some(code) = failure.error_code {
                reply.insert("error_code".to_owned(), code.to_owned());
            }
            xml_response(protocol::to_xml(&reply))
        }
    }
}

/// The bill's bytes and content type, or why there is none.
fn bill_outcome(
    state: &AppState,
    body: &[u8],
    systemerror: bool,
) -> Result<(Vec<u8>, &'static str), BillFailure> {
    let fields = protocol::decode_request(body)?;
    let sign_type = protocol::request_sign_type(&fields)?;
    if systemerror {
        return Err(BillFailure {
            return_msg: "SYSTEMERROR".to_owned(),
            error_code: None,
        });
    }
    let caller = protocol::authenticate(&fields, state.accounts(), sign_type, Scope::Bill)?;
    let request = protocol::bill_request(&fields)?;
    // A provider's bill without sub_mch_id holds every sub merchant's trades;
    // with one, only that sub merchant's (as WeChat's 服务商 downloadbill).
    let text = bill::build(
        &state.orders(),
        &caller.owner,
        request.date,
        request.bill_type,
        state.config().bill_layout,
    )
    .ok_or_else(BillFailure::no_bill)?;
    if !request.gzip {
        return Ok((text.into_bytes(), "text/plain;charset=utf-8"));
    }
    // Should compressing into memory fail, WeChat's own words for a failed
    // compression are the honest answer.
    bill::gzip(&text)
        .map(|bytes| (bytes, "application/x-gzip"))
        .map_err(|_| BillFailure {
            return_msg: "CompressGZip Error".to_owned(),
            error_code: None,
        })
}

async fn require_post() -> Response {
    xml_response(protocol::to_xml(&Fields::from([
        ("return_code".to_owned(), "FAIL".to_owned()),
        ("return_msg".to_owned(), "REQUIRE_POST_METHOD".to_owned()),
    ])))
}

async fn handle(state: AppState, endpoint: Endpoint, body: Bytes) -> Response {
    let fault = state.faults().take();
    if fault == Some(Fault::Timeout) {
        return hang_and_drop(&state).await;
    }
    let (outcome, sign_type, signer) = match protocol::decode_request(&body) {
        Err(rejection) => (Err(rejection), SignType::Md5, None),
        Ok(fields) => {
            // The reply is signed by the account the request names, even when
            // the request is refused (except that an unknown mch_id has no key).
            let signer = Signer::for_request(&fields, state.accounts());
            match protocol::request_sign_type(&fields) {
                Err(rejection) => (Err(rejection), SignType::Md5, signer),
                Ok(sign_type) => {
                    let outcome = if fault == Some(Fault::SystemError) {
                        // Refused before touching any order, as a real SYSTEMERROR may be:
                        // the client must retry with the very same request.
                        Err(Rejection::Business {
                            code: "SYSTEMERROR",
                            des: "系统超时".to_owned(),
                        })
                    } else {
                        protocol::authenticate(&fields, state.accounts(), sign_type, Scope::Trade)
                            .and_then(|caller| act(&state, endpoint, &caller, &fields, sign_type))
                    };
                    (outcome, sign_type, signer)
                }
            }
        }
    };
    if let Err(rejection) = &outcome {
        tracing::info!(?endpoint, ?rejection, "request refused");
    }
    if fault == Some(Fault::ProcessThenTimeout) {
        // The call took effect (an order placed, closed, a refund accepted), but
        // the answer is lost: the client cannot tell this from a call never made.
        tracing::info!(
            ?endpoint,
            "process_then_timeout fault: the reply will be lost"
        );
        return hang_and_drop(&state).await;
    }
    let mut reply = protocol::render(outcome, signer.as_ref(), sign_type);
    if fault == Some(Fault::BadSignature) {
        protocol::forge_signature(&mut reply);
    }
    xml_response(protocol::to_xml(&reply))
}

/// What a valid request does to the order book, and the fields it adds to the
/// reply. Every lookup is `caller`'s: another account's orders are not found.
fn act(
    state: &AppState,
    endpoint: Endpoint,
    caller: &Caller,
    fields: &Fields,
    sign_type: SignType,
) -> Result<Fields, Rejection> {
    let now = Utc::now();
    let owner = &caller.owner;
    match endpoint {
        Endpoint::UnifiedOrder => {
            let new =
                protocol::unified_order(fields, sign_type, now, state.config().min_expire_span())?;
            if state.faults().take_orderpaid() {
                return Err(business("ORDERPAID", "该订单已支付"));
            }
            let trade_type = new.trade_type.clone();
            let placed = state.orders().place(new, now).map_err(|e| match e {
                PlaceError::DuplicateOutTradeNo => {
                    business("INVALID_REQUEST", "201 商户订单号重复")
                }
                PlaceError::UsedByAnotherMerchant => business(
                    "OUT_TRADE_NO_USED",
                    "商户订单号重复（沙箱：该订单号已被另一商户使用）",
                ),
                PlaceError::Paid => business("ORDERPAID", "该订单已支付"),
                PlaceError::Closed => business("ORDERCLOSED", "该订单已关闭"),
            })?;
            let mut reply = Fields::from([
                ("prepay_id".to_owned(), placed.prepay_id),
                ("trade_type".to_owned(), trade_type),
            ]);
            if let Some(url) = placed.code_url {
                reply.insert("code_url".to_owned(), url);
            }
            if let Some(url) = placed.mweb_url {
                reply.insert("mweb_url".to_owned(), url);
            }
            Ok(reply)
        }
        Endpoint::OrderQuery => {
            let reference = protocol::query_ref(fields)?;
            state
                .orders()
                .find(owner, &reference)
                .map(query_fields)
                .ok_or_else(|| business("ORDERNOTEXIST", "订单不存在"))
        }
        Endpoint::CloseOrder => {
            let no = protocol::out_trade_no(fields)?;
            let min_age = state.config().close_min_age_span();
            state
                .orders()
                .close(owner, &no, now, min_age)
                .map_err(|e| match e {
                    CloseError::NotFound => business("ORDERNOTEXIST", "订单不存在"),
                    CloseError::Paid => business("ORDERPAID", "订单已支付，不能发起关单"),
                    CloseError::Closed => business("ORDERCLOSED", "订单已关闭，无需继续关单"),
                    CloseError::TooYoung => business(
                        "INVALID_REQUEST",
                        "订单生成后不能马上调用关单接口，最短调用时间间隔为5分钟",
                    ),
                })?;
            Ok(Fields::from([("result_msg".to_owned(), "OK".to_owned())]))
        }
        Endpoint::Refund => {
            let new = protocol::refund(fields, sign_type)?;
            if state.faults().take_notenough() {
                return Err(business("NOTENOUGH", "基本账户余额不足，请充值后重新发起"));
            }
            let refund = state
                .orders()
                .apply_refund(owner, new, now)
                .map_err(refund_rejection)?;
            if let Some(after) = state.config().refund_settle_after {
                settle_later(state.clone(), refund.out_refund_no.clone(), after);
            }
            Ok(refund_fields(&refund))
        }
        Endpoint::RefundQuery => {
            let (reference, offset) = protocol::refund_query(fields)?;
            let orders = state.orders();
            let (order, refunds) = orders
                .query_refunds(owner, &reference)
                .ok_or_else(|| business("REFUNDNOTEXIST", "not exist"))?;
            refund_query_fields(order, &refunds, offset)
        }
    }
}

/// WeChat's err_code for each reason a refund is refused. Where the live API's
/// code is on record it is used (`ERROR` 订单已全额退款, `REFUND_FEE_INVALID`
/// 累计退款金额大于支付金额, `REFUND_FEE_MISMATCH`, `TRADE_STATE_ERROR`,
/// `TRADE_OVERDUE`, `INVALID_TRANSACTIONID`); the rest are `INVALID_REQUEST`,
/// WeChat's code for "well-formed but against the business rules".
fn refund_rejection(e: RefundError) -> Rejection {
    match e {
        RefundError::OrderNotFound => business("ORDERNOTEXIST", "订单不存在"),
        RefundError::TransactionNotFound => business("INVALID_TRANSACTIONID", "无效transaction_id"),
        RefundError::NotPaid => business("TRADE_STATE_ERROR", "订单状态错误"),
        RefundError::Overdue => business("TRADE_OVERDUE", "订单已经超过退款期限"),
        RefundError::TotalFeeMismatch => {
            business("INVALID_REQUEST", "订单金额与实际支付金额不一致")
        }
        RefundError::TooManyRefunds => business("INVALID_REQUEST", "订单退款次数已达上限50次"),
        RefundError::FullyRefunded => business("ERROR", "订单已全额退款"),
        RefundError::ExceedsPaid => business("REFUND_FEE_INVALID", "累计退款金额大于支付金额"),
        RefundError::AmountsDiffer => business(
            "REFUND_FEE_MISMATCH",
            "订单金额或退款金额与之前请求不一致，请核实后再试",
        ),
        RefundError::OutRefundNoReused => business(
            "INVALID_REQUEST",
            "商户退款单号已存在，请求参数与原退款不一致",
        ),
    }
}

/// The refund API's reply: the refund as accepted (not yet done).
fn refund_fields(refund: &SandboxRefund) -> Fields {
    let fee = refund.refund_fee.to_string();
    Fields::from([
        ("transaction_id".to_owned(), refund.transaction_id.clone()),
        ("out_trade_no".to_owned(), refund.out_trade_no.clone()),
        ("out_refund_no".to_owned(), refund.out_refund_no.clone()),
        ("refund_id".to_owned(), refund.refund_id.clone()),
        ("refund_fee".to_owned(), fee.clone()),
        ("settlement_refund_fee".to_owned(), fee.clone()),
        ("cash_refund_fee".to_owned(), fee),
        ("total_fee".to_owned(), refund.total_fee.to_string()),
        ("cash_fee".to_owned(), refund.total_fee.to_string()),
        ("fee_type".to_owned(), "CNY".to_owned()),
    ])
}

/// How many refunds one refundquery lists when asked by order.
const REFUNDS_PER_PAGE: usize = 10;

/// refundquery's reply: the order, then `_$n` fields per refund. Asked by order,
/// it lists at most 10 from `offset` and, when an offset was given, the order's
/// `total_refund_count`, as WeChat pages through an order's 50 possible refunds.
fn refund_query_fields(
    order: &SandboxOrder,
    refunds: &[&SandboxRefund],
    offset: Option<usize>,
) -> Result<Fields, Rejection> {
    let start = offset.unwrap_or(0);
    if start >= refunds.len() {
        return Err(business("REFUNDNOTEXIST", "not exist"));
    }
    let page: Vec<_> = refunds.iter().skip(start).take(REFUNDS_PER_PAGE).collect();
    let mut f = Fields::new();
    let mut put = |k: String, v: String| {
        f.insert(k, v);
    };
    put(
        "transaction_id".into(),
        order.transaction_id.clone().unwrap_or_default(),
    );
    put("out_trade_no".into(), order.out_trade_no.clone());
    put("total_fee".into(), order.total_fee.to_string());
    put("cash_fee".into(), order.total_fee.to_string());
    put("fee_type".into(), "CNY".into());
    put("refund_count".into(), page.len().to_string());
    if offset.is_some() {
        put("total_refund_count".into(), refunds.len().to_string());
    }
    for (n, refund) in page.iter().enumerate() {
        put(format!("out_refund_no_{n}"), refund.out_refund_no.clone());
        put(format!("refund_id_{n}"), refund.refund_id.clone());
        put(format!("refund_fee_{n}"), refund.refund_fee.to_string());
        put(
            format!("settlement_refund_fee_{n}"),
            refund.refund_fee.to_string(),
        );
        put(
            format!("refund_status_{n}"),
            refund.status.as_str().to_owned(),
        );
        put(format!("refund_channel_{n}"), "ORIGINAL".to_owned());
        put(format!("refund_account_{n}"), refund.refund_account.clone());
        put(
            format!("refund_recv_accout_{n}"),
            notify::REFUND_RECV_ACCOUNT.to_owned(),
        );
        if let Some(t) = refund.success_time {
            put(
                format!("refund_success_time_{n}"),
                notify::china_time_with_dashes(t),
            );
        }
    }
    Ok(f)
}

fn business(code: &'static str, des: &str) -> Rejection {
    Rejection::Business {
        code,
        des: des.to_owned(),
    }
}

/// orderquery's fields for an order; payment details only once it was paid.
fn query_fields(order: &SandboxOrder) -> Fields {
    let mut f = Fields::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            f.insert(k.to_owned(), v.to_owned());
        }
    };
    let desc = match order.status {
        OrderStatus::Success => "支付成功",
        OrderStatus::Refund => "转入退款",
        OrderStatus::NotPay => "订单未支付",
        OrderStatus::Closed => "订单已关闭",
        OrderStatus::Revoked => "已撤销（付款码支付）",
        OrderStatus::UserPaying => "用户支付中，需要输入密码",
        OrderStatus::PayError => "支付失败",
    };
    put("out_trade_no", &order.out_trade_no);
    put("trade_state", order.status.as_str());
    put("trade_state_desc", desc);
    put("trade_type", &order.trade_type);
    put("openid", &order.openid);
    put("sub_openid", &order.sub_openid);
    put("product_id", &order.product_id);
    put("attach", &order.attach);
    if matches!(order.status, OrderStatus::Success | OrderStatus::Refund) {
        put(
            "transaction_id",
            order.transaction_id.as_deref().unwrap_or(""),
        );
        put("total_fee", &order.total_fee.to_string());
        put("cash_fee", &order.total_fee.to_string());
        put("fee_type", "CNY");
        put("bank_type", order.bank_type.as_deref().unwrap_or("OTHERS"));
        put("is_subscribe", "N");
        if order.owner.sub_mch_id.is_some() {
            put("sub_is_subscribe", "N");
        }
        if let Some(t) = order.time_end {
            put("time_end", &china_time::format(t));
        }
    }
    f
}

/// The `timeout` fault: hold the request past any client timeout, then drop the
/// connection without an answer (a body that fails makes hyper abort it).
pub(crate) async fn hang_and_drop(state: &AppState) -> Response {
    tracing::info!("timeout fault: holding the request");
    tokio::select! {
        _ = tokio::time::sleep(state.config().fault_hang) => {}
        // Do not hold up a graceful shutdown for a simulated hang.
        _ = state.shutdown().cancelled() => {}
    }
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated timeout"))
    });
    (StatusCode::OK, Body::from_stream(failing)).into_response()
}

pub(crate) fn xml_response(xml: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response()
}

/// WeChat moving a refund's money on its own: SUCCESS and its notification
/// `after` the request (a repeated request's second timer finds it settled and
/// does nothing).
pub(crate) fn settle_later(state: AppState, out_refund_no: String, after: std::time::Duration) {
    let stop = state.shutdown().clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(after) => {
                if let Err(e) = crate::control::settle_and_notify(
                    &state,
                    &out_refund_no,
                    crate::orders::RefundStatus::Success,
                    1,
                ) {
                    tracing::debug!(%out_refund_no, error = ?e, "refund not settled on its own");
                }
            }
        }
    });
}
