//! Notifications: what WeChat POSTs to a merchant, and the delivery loop that
//! retries on WeChat's schedule until the merchant acknowledges (v2:
//! return_code SUCCESS; v3: any 2xx). A v2 payment notification goes to the
//! order's notify_url, signed with the key of the account the order belongs
//! to and the order's sign type; a refund notification goes to the refund's
//! notify_url, unsigned, its content encrypted in `req_info`. A v3 payment
//! notification (`TRANSACTION.SUCCESS`) is JSON whose `resource` is sealed
//! under the merchant's APIv3 key, signed at each attempt (so a retry hours
//! later carries a fresh timestamp) with the key WeChat then uses for the
//! merchant. A v3 refund notification (`REFUND.SUCCESS`, `REFUND.ABNORMAL`,
//! `REFUND.CLOSED`) is made the same way around the refund's resource. Every
//! attempt is recorded in the delivery log of the order or
//! refund it is about.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{distr::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use wxpay_core::{
    domain::Nonce,
    wechat::{
        china_time, refund_crypto, sign, v3,
        v3::models::{EncryptedResource, Notification, TRANSACTION_SUCCESS},
        xml, ApiKey, Fields,
    },
};

use crate::{
    orders::{DeliveryAttempt, Owner, RefundStatus, SandboxOrder, SandboxRefund},
    state::AppState,
    v3_protocol,
};

/// Whose delivery log an attempt goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A payment notification, by out_trade_no.
    Order(String),
    /// A refund notification, by out_refund_no.
    Refund(String),
}

/// WeChat's pauses between attempts: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h.
const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

/// The most of a merchant's reply kept in the log.
const MAX_LOGGED_REPLY: usize = 4096;

/// How a notification reaches the merchant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// One copy, retried until acknowledged.
    #[default]
    Normal,
    /// The payment is recorded but no notification is ever sent, as when
    /// WeChat's notifications are lost: only orderquery will find out.
    Drop,
    /// Several copies at once, as from two WeChat servers within a second.
    Duplicate,
}

/// The pause before each retry, with time running `time_factor` times faster.
pub fn retry_delays(time_factor: u32) -> impl Iterator<Item = Duration> {
    let factor = time_factor.max(1);
    RETRY_SCHEDULE_SECS
        .into_iter()
        .map(move |s| Duration::from_secs(s) / factor)
}

/// The notification for a paid (SUCCESS) or failed (PAYERROR) order, signed with
/// `key` (its account's) and the order's sign type. `omit_sign_type` leaves the
/// `sign_type` field out (as WeChat sometimes does) while still signing with the
/// order's algorithm. A service provider's order also names the sub merchant,
/// its sub_appid and the payer's sub_openid under it.
pub fn notification(order: &SandboxOrder, key: &ApiKey, omit_sign_type: bool) -> Fields {
    let mut f = Fields::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            f.insert(k.to_owned(), v.to_owned());
        }
    };
    put("return_code", "SUCCESS");
    put("appid", &order.app_id);
    put("mch_id", &order.owner.mch_id);
    put("nonce_str", Nonce::generate().as_str());
    put("openid", &order.openid);
    put("is_subscribe", "N");
    if let Some(sub_mch_id) = &order.owner.sub_mch_id {
        put("sub_mch_id", sub_mch_id);
        put("sub_appid", order.sub_app_id.as_deref().unwrap_or(""));
        put("sub_openid", &order.sub_openid);
        put("sub_is_subscribe", "N");
    }
    put("trade_type", &order.trade_type);
    put("bank_type", order.bank_type.as_deref().unwrap_or("OTHERS"));
    put("total_fee", &order.total_fee.to_string());
    put("fee_type", "CNY");
    put("out_trade_no", &order.out_trade_no);
    put("attach", &order.attach);
    if let Some(t) = order.time_end {
        put("time_end", &china_time::format(t));
    }
    match &order.failure {
        Some((code, des)) => {
            put("result_code", "FAIL");
            put("err_code", code);
            put("err_code_des", des);
        }
        None => {
            put("result_code", "SUCCESS");
            put("cash_fee", &order.total_fee.to_string());
            put(
                "transaction_id",
                order.transaction_id.as_deref().unwrap_or(""),
            );
        }
    }
    if !omit_sign_type {
        put("sign_type", order.sign_type.as_str());
    }
    let signature = sign::sign(f.iter(), key, order.sign_type);
    f.insert("sign".into(), signature);
    f
}

/// The refund notification: `return_code`, `appid`, `mch_id` (and a service
/// provider's `sub_mch_id`, `sub_appid`), `nonce_str` and `req_info`, the
/// refund's details as a `<root>` document encrypted with `key`, the order's
/// account's. It carries no `sign`: the encryption is what proves it is
/// WeChat's. `None` only if our own fields could not be encoded (a bug).
pub fn refund_notification(
    refund: &SandboxRefund,
    order: &SandboxOrder,
    key: &ApiKey,
) -> Option<Fields> {
    let mut info = Fields::new();
    let mut put = |k: &str, v: String| {
        info.insert(k.to_owned(), v);
    };
    put("transaction_id", refund.transaction_id.clone());
    put("out_trade_no", refund.out_trade_no.clone());
    put("refund_id", refund.refund_id.clone());
    put("out_refund_no", refund.out_refund_no.clone());
    put("total_fee", refund.total_fee.to_string());
    put("refund_fee", refund.refund_fee.to_string());
    put("settlement_refund_fee", refund.refund_fee.to_string());
    put("cash_refund_fee", refund.refund_fee.to_string());
    put("refund_status", refund.status.as_str().to_owned());
    put("refund_recv_accout", REFUND_RECV_ACCOUNT.to_owned());
    put("refund_account", refund.refund_account.clone());
    put("refund_request_source", "API".to_owned());
    if let (RefundStatus::Success, Some(t)) = (refund.status, refund.success_time) {
        put("success_time", china_time_with_dashes(t));
    }
    let req_info = match refund_crypto::encrypt_req_info(&info, key) {
        Ok(r) => r,
        Err(e) => {
            let out_refund_no = refund.out_refund_no.as_str();
            tracing::error!(error = %e, out_refund_no, "req_info could not be encrypted");
            return None;
        }
    };
    let mut outer = Fields::from([
        ("return_code".to_owned(), "SUCCESS".to_owned()),
        ("appid".to_owned(), order.app_id.clone()),
        ("mch_id".to_owned(), order.owner.mch_id.clone()),
        (
            "nonce_str".to_owned(),
            Nonce::generate().as_str().to_owned(),
        ),
        ("req_info".to_owned(), req_info),
    ]);
    if let Some(sub_mch_id) = &order.owner.sub_mch_id {
        outer.insert("sub_mch_id".to_owned(), sub_mch_id.clone());
        if let Some(sub_app_id) = &order.sub_app_id {
            outer.insert("sub_appid".to_owned(), sub_app_id.clone());
        }
    }
    Some(outer)
}

/// Where a refund to the payer's WeChat balance lands, in WeChat's words.
pub const REFUND_RECV_ACCOUNT: &str = "支付用户的零钱";

/// `yyyy-MM-dd HH:mm:ss`, China time: how refunds and bills write times.
pub fn china_time_with_dashes(t: chrono::DateTime<Utc>) -> String {
    let s = china_time::format(t);
    // china_time::format always gives 14 ASCII digits, so these slices hold.
    format!(
        "{}-{}-{} {}:{}:{}",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14]
    )
}

/// The v3 payment notification of a paid order: `TRANSACTION.SUCCESS`, its
/// resource (what a query answers) sealed with AEAD_AES_256_GCM under the
/// merchant's APIv3 key, a 12-character nonce and associated_data
/// `transaction`. `None` only if our own JSON could not be sealed (a bug).
pub fn v3_payment_notification(
    order: &SandboxOrder,
    apiv3_key: &v3::Apiv3Key,
    now: DateTime<Utc>,
) -> Option<String> {
    let plaintext = v3_protocol::transaction(order).to_string();
    let event = V3Event {
        event_type: TRANSACTION_SUCCESS,
        summary: "支付成功",
        original_type: "transaction",
    };
    v3_notification(&event, plaintext.as_bytes(), apiv3_key, now)
}

/// The v3 notification of a settled refund: `REFUND.SUCCESS`,
/// `REFUND.ABNORMAL` or `REFUND.CLOSED`, its resource (`RefundResource`,
/// with `refund_status`) sealed under the APIv3 key with associated_data
/// and original_type `refund`. `None` for a refund still PROCESSING, or if
/// our own JSON could not be sealed (a bug).
pub fn v3_refund_notification(
    refund: &SandboxRefund,
    owner: &Owner,
    apiv3_key: &v3::Apiv3Key,
    now: DateTime<Utc>,
) -> Option<String> {
    let (event_type, summary) = v3_protocol::refund_event(refund.status)?;
    let plaintext = serde_json::to_vec(&v3_protocol::refund_resource(refund, owner)).ok()?;
    let event = V3Event {
        event_type,
        summary,
        original_type: "refund",
    };
    v3_notification(&event, &plaintext, apiv3_key, now)
}

/// What a v3 notification announces, beside its sealed resource.
struct V3Event {
    event_type: &'static str,
    summary: &'static str,
    /// Also the resource's associated_data, as WeChat sets both.
    original_type: &'static str,
}

/// The envelope of a v3 notification around `plaintext`, sealed under
/// `apiv3_key` with a fresh 12-character nonce.
fn v3_notification(
    event: &V3Event,
    plaintext: &[u8],
    apiv3_key: &v3::Apiv3Key,
    now: DateTime<Utc>,
) -> Option<String> {
    let nonce = random_text(12);
    let resource = match EncryptedResource::seal(
        apiv3_key,
        &nonce,
        event.original_type,
        event.original_type,
        plaintext,
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, event = event.event_type, "resource not sealed");
            return None;
        }
    };
    let notification = Notification {
        // WeChat's notification ids: a fresh one per event, like EV-2018022511223320873.
        id: format!(
            "EV-{}{}",
            china_time::format(now),
            rand::rng().random_range(100_000..1_000_000)
        ),
        create_time: china_time::format_rfc3339(now),
        event_type: event.event_type.to_owned(),
        resource_type: "encrypt-resource".to_owned(),
        summary: event.summary.to_owned(),
        resource,
    };
    serde_json::to_string(&notification).ok()
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A notification's body, in its dialect.
#[derive(Debug, Clone)]
pub enum Message {
    /// XML, acknowledged by return_code SUCCESS on a 2xx.
    V2(String),
    /// JSON, signed at each attempt with the key WeChat then uses for
    /// `mch_id`; acknowledged by any 2xx (the contract's 200 or 204).
    V3 { body: String, mch_id: String },
}

/// Starts delivering `copies` concurrent copies of `fields` to `url`, each with
/// its own retry loop, logging every attempt under `subject`. Returns at once.
pub fn start(state: &AppState, subject: Subject, url: &str, fields: &Fields, copies: u32) {
    if let Some(body) = encode(fields) {
        start_message(state, subject, url, Message::V2(body), copies);
    }
}

/// A v2 notification's XML; `None` (logged) only for fields XML cannot
/// carry, which our own fields from validated orders never are (a bug).
pub fn encode(fields: &Fields) -> Option<String> {
    match xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(body) => Some(body),
        Err(e) => {
            tracing::error!(error = %e, "notification could not be encoded");
            None
        }
    }
}

/// [`start`] for a message already made (a v3 notification's JSON).
pub fn start_message(state: &AppState, subject: Subject, url: &str, message: Message, copies: u32) {
    for copy in 1..=copies {
        let state = state.clone();
        let url = url.to_owned();
        let subject = subject.clone();
        let message = message.clone();
        tokio::spawn(async move { deliver(state, subject, url, message, copy).await });
    }
}

#[tracing::instrument(skip(state, url, body))]
async fn deliver(state: AppState, subject: Subject, url: String, body: Message, copy: u32) {
    let delays = std::iter::once(Duration::ZERO).chain(retry_delays(state.config().time_factor));
    for (attempt, delay) in (1u32..).zip(delays) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = state.shutdown().cancelled() => return,
        }
        let record = attempt_once(&state, &url, &body, copy, attempt).await;
        let acknowledged = record.acknowledged;
        tracing::info!(
            attempt,
            http_status = record.http_status,
            acknowledged,
            error = record.error.as_deref(),
            "notification attempt"
        );
        match &subject {
            Subject::Order(no) => state.orders().record_delivery(no, record),
            Subject::Refund(no) => state.orders().record_refund_delivery(no, record),
        }
        if acknowledged {
            return;
        }
    }
    tracing::warn!("notification never acknowledged; WeChat gives up here");
}

async fn attempt_once(
    state: &AppState,
    url: &str,
    message: &Message,
    copy: u32,
    attempt: u32,
) -> DeliveryAttempt {
    let mut record = DeliveryAttempt {
        copy,
        attempt,
        at: Utc::now().to_rfc3339(),
        http_status: None,
        reply: None,
        error: None,
        acknowledged: false,
    };
    let request = match message {
        Message::V2(body) => state
            .http()
            .post(url)
            .header("content-type", "text/xml")
            .body(body.clone()),
        Message::V3 { body, mch_id } => {
            let signer = state.keys().and_then(|k| k.notification_signer(mch_id));
            let signed = signer.map(|s| v3_protocol::sign(&s, body.as_bytes(), Utc::now(), false));
            let Some(Ok(signature)) = signed else {
                // The merchant is a hosted v3 one (its order was placed over v3).
                record.error = Some("the notification could not be signed".to_owned());
                return record;
            };
            let mut request = state
                .http()
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone());
            for (name, value) in signature.headers() {
                request = request.header(name, value);
            }
            request
        }
    };
    let sent = request.send().await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            record.error = Some(e.to_string());
            return record;
        }
    };
    let status = response.status();
    record.http_status = Some(status.as_u16());
    match response.bytes().await {
        Ok(bytes) => {
            record.acknowledged = match message {
                // WeChat stops only on a well-formed return_code SUCCESS, on a 2xx.
                Message::V2(_) => {
                    status.is_success()
                        && xml::decode(&bytes).is_ok_and(|f| {
                            f.get("return_code").map(String::as_str) == Some("SUCCESS")
                        })
                }
                // v3: any 2xx; a 4xx/5xx (`{"code":"FAIL"}`) or no answer is retried.
                Message::V3 { .. } => status.is_success(),
            };
            let text = String::from_utf8_lossy(&bytes);
            record.reply = Some(text.chars().take(MAX_LOGGED_REPLY).collect());
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_times_are_written_with_dashes_in_china_time() {
        let t = china_time::parse("20240229235958").expect("valid");
        assert_eq!(china_time_with_dashes(t), "2024-02-29 23:59:58");
    }

    #[test]
    fn the_schedule_is_wechats_24h4m_divided_by_the_factor() {
        let total: Duration = retry_delays(1).sum();
        assert_eq!(total, Duration::from_secs(24 * 3600 + 4 * 60));
        let fast: Vec<Duration> = retry_delays(1000).take(3).collect();
        assert_eq!(
            fast,
            [
                Duration::from_millis(15),
                Duration::from_millis(15),
                Duration::from_millis(30)
            ]
        );
    }
}
