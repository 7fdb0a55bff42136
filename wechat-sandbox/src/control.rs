//! The control API (JSON, under `/sandbox/`): what tests and demos use to play
//! the payer (pay, fail, start paying) and WeChat's bank side (settle a refund),
//! to let time pass for an order or refund (age), to arm faults, and to look at
//! orders, refunds and their notification deliveries. The JSON types here are
//! shared with the typed client in `handle`.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{TimeDelta, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use wxpay_core::{
    domain::{OrderStatus, TransactionId},
    wechat::{china_time, ApiVersion},
};

use crate::{
    faults::Faults,
    notify::{self, Delivery, Subject},
    orders::{
        DeliveryAttempt, Payer, RefundMoveError, RefundStatus, SandboxOrder, SandboxRefund,
        TransitionError,
    },
    state::AppState,
};

/// The most concurrent copies a `duplicate` delivery may ask for.
pub const MAX_DUPLICATES: u32 = 100;

/// The furthest an order may be aged in one call: three years, past WeChat's
/// one-year refund limit and any bill a test wants, far inside chrono's range.
pub const MAX_AGE_SECONDS: u64 = 3 * 366 * 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandbox/orders/{out_trade_no}", get(order))
        .route("/sandbox/orders/{out_trade_no}/pay", post(pay))
        .route("/sandbox/prepay/{prepay_id}/pay", post(pay_prepay))
        .route("/sandbox/orders/{out_trade_no}/fail", post(fail))
        .route(
            "/sandbox/orders/{out_trade_no}/userpaying",
            post(user_paying),
        )
        .route("/sandbox/orders/{out_trade_no}/age", post(age))
        .route(
            "/sandbox/orders/{out_trade_no}/notifications",
            get(notifications),
        )
        .route("/sandbox/refunds/{out_refund_no}", get(refund))
        .route(
            "/sandbox/refunds/{out_refund_no}/settle",
            post(settle_refund),
        )
        .route("/sandbox/refunds/{out_refund_no}/age", post(age_refund))
        .route(
            "/sandbox/refunds/{out_refund_no}/notifications",
            get(refund_notifications),
        )
        .route("/sandbox/faults", post(set_faults).get(faults))
        .merge(crate::control_v3::routes())
}

/// How the notification of a payment (or failure) is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyOptions {
    pub delivery: Delivery,
    /// For `duplicate`: how many copies are sent at once (default 2).
    pub duplicates: u32,
    /// Leave `sign_type` out of the notification (still signed with the order's type).
    pub omit_sign_type: bool,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            delivery: Delivery::Normal,
            duplicates: 2,
            omit_sign_type: false,
        }
    }
}

/// `POST /sandbox/orders/{no}/pay`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayOptions {
    #[serde(flatten)]
    pub notify: NotifyOptions,
    /// WeChat's payment id; a fresh 28-digit one unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Who pays, under the order's appid: for an order placed without one (a
    /// NATIVE QR scan, an APP or H5 payer); a JSAPI order's own payer must
    /// match. A fresh openid when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The payer under the order's sub_appid (service-provider orders with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
}

/// `POST /sandbox/orders/{no}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailOptions {
    #[serde(flatten)]
    pub notify: NotifyOptions,
    pub err_code: String,
    pub err_code_des: String,
}

impl Default for FailOptions {
    fn default() -> Self {
        Self {
            notify: NotifyOptions::default(),
            err_code: "NOTENOUGH".to_owned(),
            err_code_des: "余额不足".to_owned(),
        }
    }
}

/// `POST /sandbox/orders/{no}/age`: how far into the past to move the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeOptions {
    /// 1 ..= [`MAX_AGE_SECONDS`].
    pub seconds: u64,
}

/// An order as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The account it belongs to (the provider's in service-provider mode).
    pub mch_id: String,
    /// The sub merchant it was placed for, in service-provider mode.
    pub sub_mch_id: Option<String>,
    pub app_id: String,
    pub sub_app_id: Option<String>,
    /// The payer under sub_appid, once known.
    pub sub_openid: Option<String>,
    /// NATIVE's product_id.
    pub product_id: Option<String>,
    /// NATIVE: the QR code's content.
    pub code_url: Option<String>,
    /// MWEB: the H5 payment page.
    pub mweb_url: Option<String>,
    pub out_trade_no: String,
    pub status: String,
    pub prepay_id: String,
    pub transaction_id: Option<String>,
    /// Fen.
    pub total_fee: i64,
    /// v2: MD5 or HMAC-SHA256; v3: RSA.
    pub sign_type: String,
    /// `v2` or `v3`: the dialect the order was placed in (its notifications').
    #[serde(default = "v2")]
    pub api_version: String,
    pub notify_url: String,
    pub body: String,
    pub attach: String,
    pub openid: String,
    pub trade_type: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `yyyyMMddHHmmss`, China time, once paid or failed.
    pub time_end: Option<String>,
    /// `yyyyMMddHHmmss`, China time, when the merchant set one (moved by aging).
    pub time_expire: Option<String>,
}

impl From<&SandboxOrder> for OrderView {
    fn from(o: &SandboxOrder) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            mch_id: o.owner.mch_id.clone(),
            sub_mch_id: o.owner.sub_mch_id.clone(),
            app_id: o.app_id.clone(),
            sub_app_id: o.sub_app_id.clone(),
            sub_openid: some(&o.sub_openid),
            product_id: some(&o.product_id),
            code_url: o.code_url.clone(),
            mweb_url: o.mweb_url.clone(),
            out_trade_no: o.out_trade_no.clone(),
            status: o.status.as_str().to_owned(),
            prepay_id: o.prepay_id.clone(),
            transaction_id: o.transaction_id.clone(),
            total_fee: o.total_fee,
            sign_type: match o.api_version {
                ApiVersion::V2 => o.sign_type.as_str().to_owned(),
                ApiVersion::V3 => "RSA".to_owned(),
            },
            api_version: o.api_version.as_str().to_owned(),
            notify_url: o.notify_url.clone(),
            body: o.body.clone(),
            attach: o.attach.clone(),
            openid: o.openid.clone(),
            trade_type: o.trade_type.clone(),
            created_at: o.created_at.to_rfc3339(),
            time_end: o.time_end.map(china_time::format),
            time_expire: o.time_expire.map(china_time::format),
        }
    }
}

fn v2() -> String {
    "v2".to_owned()
}

/// `POST /sandbox/refunds/{no}/settle`: how the refund ends and how its
/// notification is delivered (sent only when the refund request had a
/// notify_url), in the dialect the refund was asked for in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettleOptions {
    /// SUCCESS (default), CHANGE or REFUNDCLOSE; v3's names ABNORMAL and
    /// CLOSED are taken too.
    pub status: RefundStatus,
    pub delivery: Delivery,
    /// For `duplicate`: how many copies are sent at once (default 2).
    pub duplicates: u32,
}

impl Default for SettleOptions {
    fn default() -> Self {
        Self {
            status: RefundStatus::Success,
            delivery: Delivery::Normal,
            duplicates: 2,
        }
    }
}

/// A refund as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub out_refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    /// Fen, the order's amount.
    pub total_fee: i64,
    /// Fen.
    pub refund_fee: i64,
    /// PROCESSING, SUCCESS, CHANGE or REFUNDCLOSE (v2's names, whatever the
    /// dialect; a v3 answer says ABNORMAL for CHANGE, CLOSED for REFUNDCLOSE).
    pub status: String,
    /// `v2` or `v3`: the dialect the refund was asked for in (its notification's).
    #[serde(default = "v2")]
    pub api_version: String,
    pub refund_desc: String,
    pub refund_account: String,
    pub notify_url: Option<String>,
    /// RFC 3339, UTC: when the refund was applied for.
    pub created_at: String,
    /// `yyyy-MM-dd HH:mm:ss`, China time, once SUCCESS.
    pub success_time: Option<String>,
}

impl From<&SandboxRefund> for RefundView {
    fn from(r: &SandboxRefund) -> Self {
        Self {
            out_refund_no: r.out_refund_no.clone(),
            refund_id: r.refund_id.clone(),
            out_trade_no: r.out_trade_no.clone(),
            transaction_id: r.transaction_id.clone(),
            total_fee: r.total_fee,
            refund_fee: r.refund_fee,
            status: r.status.as_str().to_owned(),
            api_version: r.api_version.as_str().to_owned(),
            refund_desc: r.refund_desc.clone(),
            refund_account: r.refund_account.clone(),
            notify_url: r.notify_url.clone(),
            created_at: r.created_at.to_rfc3339(),
            success_time: r.success_time.map(notify::china_time_with_dashes),
        }
    }
}

/// The body of every control-API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub(crate) enum ControlError {
    BadRequest(String),
    NotFound,
    NoSuchRefund,
    /// Not a hosted v3 merchant.
    NotV3(String),
    Conflict(String),
    /// Something the sandbox could not do (a key it could not make).
    Internal(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            ControlError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ControlError::NotFound => (StatusCode::NOT_FOUND, "no such order".to_owned()),
            ControlError::NoSuchRefund => (StatusCode::NOT_FOUND, "no such refund".to_owned()),
            ControlError::NotV3(mch_id) => (
                StatusCode::NOT_FOUND,
                format!("mch_id {mch_id} is not a hosted v3 merchant"),
            ),
            ControlError::Conflict(m) => (StatusCode::CONFLICT, m),
            ControlError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

impl From<TransitionError> for ControlError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound => ControlError::NotFound,
            TransitionError::Conflict(status) => {
                ControlError::Conflict(format!("the order is {status}"))
            }
            TransitionError::Expired => ControlError::Conflict("the order has expired".to_owned()),
            TransitionError::TransactionIdTaken => {
                ControlError::Conflict("transaction_id is already used by another order".to_owned())
            }
            TransitionError::TooOld => {
                ControlError::BadRequest("that would move a time out of the calendar".to_owned())
            }
            TransitionError::OtherPayer => {
                ControlError::Conflict("the order was placed for another payer".to_owned())
            }
            TransitionError::NoSubAppId => ControlError::BadRequest(
                "sub_openid is for an order placed with a sub_appid".to_owned(),
            ),
        }
    }
}

impl From<RefundMoveError> for ControlError {
    fn from(e: RefundMoveError) -> Self {
        match e {
            RefundMoveError::NotFound => ControlError::NoSuchRefund,
            RefundMoveError::AlreadySettled(status) => {
                ControlError::Conflict(format!("the refund is already {}", status.as_str()))
            }
            RefundMoveError::BeforePayment => ControlError::Conflict(
                "that would put the refund before the payment it refunds".to_owned(),
            ),
        }
    }
}

/// An empty body means "all defaults", so `curl -X POST` works without `-d`.
pub(crate) fn options<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A body that must be there: no defaults to fall back on.
pub(crate) fn required<T: DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("invalid JSON body: {e}")))
}

fn copies(options: &NotifyOptions) -> Result<u32, ControlError> {
    copies_of(options.delivery, options.duplicates)
}

fn copies_of(delivery: Delivery, duplicates: u32) -> Result<u32, ControlError> {
    match delivery {
        Delivery::Normal => Ok(1),
        Delivery::Drop => Ok(0),
        Delivery::Duplicate if (1..=MAX_DUPLICATES).contains(&duplicates) => Ok(duplicates),
        Delivery::Duplicate => Err(ControlError::BadRequest(format!(
            "duplicates must be 1..={MAX_DUPLICATES}"
        ))),
    }
}

/// An openid as WeChat writes them: 1..=128 of letters, digits, `_` and `-`.
fn check_openid(field: &str, value: &Option<String>) -> Result<(), ControlError> {
    let ok = value.as_deref().is_none_or(|v| {
        (1..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    });
    if ok {
        Ok(())
    } else {
        Err(ControlError::BadRequest(format!(
            "{field} must be 1..=128 of letters, digits, _ and -"
        )))
    }
}

async fn pay(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Json<OrderView>, ControlError> {
    let options: PayOptions = options(&body)?;
    let copies = copies(&options.notify)?;
    if let Some(tid) = &options.transaction_id {
        TransactionId::parse(tid).map_err(|e| ControlError::BadRequest(e.to_string()))?;
    }
    check_openid("openid", &options.openid)?;
    check_openid("sub_openid", &options.sub_openid)?;
    let payer = Payer {
        openid: options.openid,
        sub_openid: options.sub_openid,
    };
    let order = state
        .orders()
        .pay(&out_trade_no, options.transaction_id, payer, Utc::now())?;
    tracing::info!(%out_trade_no, ?options.notify, "paid");
    notify_payment(&state, &order, &options.notify, copies);
    Ok(Json(OrderView::from(&order)))
}

/// Starts the payment (or failure) notification in the order's dialect: v2
/// signed with the key of the account the order belongs to; v3 (for a
/// payment only: v3 does not notify failures) sealed under its APIv3 key.
fn notify_payment(state: &AppState, order: &SandboxOrder, options: &NotifyOptions, copies: u32) {
    if order.api_version == ApiVersion::V3 {
        notify_v3_payment(state, order, copies);
        return;
    }
    let Some(key) = state.accounts().key_of(&order.owner.mch_id) else {
        // Orders are only placed by hosted accounts, which never go away.
        tracing::error!(out_trade_no = %order.out_trade_no, "the order's account is not hosted");
        return;
    };
    let fields = notify::notification(order, key, options.omit_sign_type);
    notify::start(
        state,
        Subject::Order(order.out_trade_no.clone()),
        &order.notify_url,
        &fields,
        copies,
    );
}

/// The v3 `TRANSACTION.SUCCESS` of a paid order, to its notify_url.
fn notify_v3_payment(state: &AppState, order: &SandboxOrder, copies: u32) {
    if order.status != OrderStatus::Success {
        tracing::info!(out_trade_no = %order.out_trade_no, "v3 notifies payments only");
        return;
    }
    let apiv3_key = state
        .keys()
        .and_then(|k| k.merchant(&order.owner.mch_id).map(|m| m.apiv3_key.clone()));
    let Some(apiv3_key) = apiv3_key else {
        // v3 orders are only placed by hosted v3 accounts, which never go away.
        tracing::error!(out_trade_no = %order.out_trade_no, "the order's account is not v3");
        return;
    };
    let Some(body) = notify::v3_payment_notification(order, &apiv3_key, Utc::now()) else {
        return;
    };
    notify::start_message(
        state,
        Subject::Order(order.out_trade_no.clone()),
        &order.notify_url,
        notify::Message::V3 {
            body,
            mch_id: order.owner.mch_id.clone(),
        },
        copies,
    );
}

/// `POST /sandbox/prepay/{prepay_id}/pay`: the same as paying by order number,
/// for a client that knows only what `wx.requestPayment` is given (its
/// `package` is `prepay_id=…`), as WeChat's own client does.
async fn pay_prepay(
    State(state): State<AppState>,
    Path(prepay_id): Path<String>,
    body: Bytes,
) -> Result<Json<OrderView>, ControlError> {
    let out_trade_no = state
        .orders()
        .all_orders()
        .find(|o| o.prepay_id == prepay_id)
        .map(|o| o.out_trade_no.clone())
        .ok_or(ControlError::NotFound)?;
    pay(State(state), Path(out_trade_no), body).await
}

async fn fail(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Json<OrderView>, ControlError> {
    let options: FailOptions = options(&body)?;
    let copies = copies(&options.notify)?;
    let code_ok = !options.err_code.is_empty()
        && options.err_code.len() <= 32
        && options
            .err_code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_');
    if !code_ok || options.err_code_des.len() > 128 {
        return Err(ControlError::BadRequest(
            "err_code must be 1..=32 of A-Z and _, err_code_des at most 128 bytes".to_owned(),
        ));
    }
    let order = state.orders().fail(
        &out_trade_no,
        options.err_code,
        options.err_code_des,
        Utc::now(),
    )?;
    tracing::info!(%out_trade_no, "payment failed");
    notify_payment(&state, &order, &options.notify, copies);
    Ok(Json(OrderView::from(&order)))
}

async fn user_paying(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ControlError> {
    let order = state.orders().user_paying(&out_trade_no, Utc::now())?;
    Ok(Json(OrderView::from(&order)))
}

async fn age(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
    body: Bytes,
) -> Result<Json<OrderView>, ControlError> {
    let AgeOptions { seconds } = required(&body)?;
    let by = age_span(seconds)?;
    let order = state.orders().age(&out_trade_no, by)?;
    tracing::info!(%out_trade_no, seconds, "order aged");
    Ok(Json(OrderView::from(&order)))
}

/// Seconds to age something by, checked against [`MAX_AGE_SECONDS`].
fn age_span(seconds: u64) -> Result<TimeDelta, ControlError> {
    if !(1..=MAX_AGE_SECONDS).contains(&seconds) {
        return Err(ControlError::BadRequest(format!(
            "seconds must be 1..={MAX_AGE_SECONDS}"
        )));
    }
    // In range by the check above (three years of seconds fit an i64 easily).
    Ok(TimeDelta::seconds(seconds as i64))
}

async fn order(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ControlError> {
    let orders = state.orders();
    let order = orders.get(&out_trade_no).ok_or(ControlError::NotFound)?;
    Ok(Json(OrderView::from(order)))
}

async fn notifications(
    State(state): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<Vec<DeliveryAttempt>>, ControlError> {
    let orders = state.orders();
    let order = orders.get(&out_trade_no).ok_or(ControlError::NotFound)?;
    Ok(Json(order.deliveries.clone()))
}

async fn refund(
    State(state): State<AppState>,
    Path(out_refund_no): Path<String>,
) -> Result<Json<RefundView>, ControlError> {
    let orders = state.orders();
    let refund = orders
        .get_refund(&out_refund_no)
        .ok_or(ControlError::NoSuchRefund)?;
    Ok(Json(RefundView::from(refund)))
}

async fn settle_refund(
    State(state): State<AppState>,
    Path(out_refund_no): Path<String>,
    body: Bytes,
) -> Result<Json<RefundView>, ControlError> {
    let options: SettleOptions = options(&body)?;
    if options.status == RefundStatus::Processing {
        return Err(ControlError::BadRequest(
            "status must be SUCCESS, CHANGE (v3: ABNORMAL) or REFUNDCLOSE (v3: CLOSED)".to_owned(),
        ));
    }
    let copies = copies_of(options.delivery, options.duplicates)?;
    let refund = settle_and_notify(&state, &out_refund_no, options.status, copies)?;
    Ok(Json(RefundView::from(&refund)))
}

/// Settles a PROCESSING refund and starts its notification (`copies` of it):
/// what the control API does, and what WeChat does on its own after a while
/// (`SandboxConfig::refund_settle_after`).
pub(crate) fn settle_and_notify(
    state: &AppState,
    out_refund_no: &str,
    status: RefundStatus,
    copies: u32,
) -> Result<SandboxRefund, ControlError> {
    let refund = state
        .orders()
        .settle_refund(out_refund_no, status, Utc::now())?;
    tracing::info!(%out_refund_no, status = refund.status.as_str(), "refund settled");
    // WeChat notifies the refund's own notify_url; without one it would use the
    // address configured on the merchant platform, which the sandbox has none of.
    if let Some(url) = &refund.notify_url {
        let message = match refund.api_version {
            ApiVersion::V2 => v2_refund_message(state, &refund),
            ApiVersion::V3 => v3_refund_message(state, &refund),
        };
        if let Some(message) = message {
            notify::start_message(
                state,
                Subject::Refund(refund.out_refund_no.clone()),
                url,
                message,
                copies,
            );
        }
    }
    Ok(refund)
}

/// A v2 refund's notification: `req_info` encrypted with the key of the
/// account its order belongs to.
fn v2_refund_message(state: &AppState, refund: &SandboxRefund) -> Option<notify::Message> {
    let fields = {
        let orders = state.orders();
        let order = orders.get(&refund.out_trade_no)?;
        let key = state.accounts().key_of(&order.owner.mch_id)?;
        notify::refund_notification(refund, order, key)?
    };
    notify::encode(&fields).map(notify::Message::V2)
}

/// A v3 refund's notification: its resource sealed under the APIv3 key of
/// the account its order belongs to, signed at each attempt.
fn v3_refund_message(state: &AppState, refund: &SandboxRefund) -> Option<notify::Message> {
    let owner = state.orders().get(&refund.out_trade_no)?.owner.clone();
    let apiv3_key = state
        .keys()
        .and_then(|k| k.merchant(&owner.mch_id).map(|m| m.apiv3_key.clone()));
    let Some(apiv3_key) = apiv3_key else {
        // v3 refunds are only asked for by hosted v3 accounts, which never go away.
        tracing::error!(out_refund_no = %refund.out_refund_no, "the refund's account is not v3");
        return None;
    };
    let body = notify::v3_refund_notification(refund, &owner, &apiv3_key, Utc::now())?;
    Some(notify::Message::V3 {
        body,
        mch_id: owner.mch_id,
    })
}

async fn age_refund(
    State(state): State<AppState>,
    Path(out_refund_no): Path<String>,
    body: Bytes,
) -> Result<Json<RefundView>, ControlError> {
    let AgeOptions { seconds } = required(&body)?;
    let by = age_span(seconds)?;
    let refund = state.orders().age_refund(&out_refund_no, by)?;
    Ok(Json(RefundView::from(&refund)))
}

async fn refund_notifications(
    State(state): State<AppState>,
    Path(out_refund_no): Path<String>,
) -> Result<Json<Vec<DeliveryAttempt>>, ControlError> {
    let orders = state.orders();
    let refund = orders
        .get_refund(&out_refund_no)
        .ok_or(ControlError::NoSuchRefund)?;
    Ok(Json(refund.deliveries.clone()))
}

async fn set_faults(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Faults>, ControlError> {
    let faults: Faults = options(&body)?;
    state.faults().set(faults);
    tracing::info!(?faults, "faults armed");
    Ok(Json(faults))
}

async fn faults(State(state): State<AppState>) -> Json<Faults> {
    Json(state.faults().current())
}
