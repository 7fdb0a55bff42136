//! `POST /wechat/refund/notify`: WeChat's refund result. The outer XML carries
//! no signature; the proof that WeChat sent it is `req_info`, which only
//! decrypts under the API key of the merchant the outer `mch_id` (and
//! `sub_mch_id`) names ([`crate::proof::refund`]): until it does, nothing is
//! read or kept. The refund it describes is applied to its refund record
//! once, and only when its order is that merchant's (amount, order and
//! transaction checked against what is stored); the first successful refund
//! moves the order to REFUND, and each adds to its `refunded_fee`. This module
//! is v2's parser only: what it reads is decided, applied and kept by
//! [`crate::refund_notice::conclude`], which the v3 refund notification shares.

use axum::body::Bytes;
use wxpay_core::{
    domain::{Fee, OutRefundNo, OutTradeNo, RefundStatus},
    wechat::{china_time, Fields},
};
use wxpay_store::RefundUpdate;

use crate::{
    proof,
    refund_notice::{self, RefundNotice},
    state::AppState,
    verdict::Judged,
};

/// Processes one refund notification body (already bounded in size).
pub async fn process(state: &AppState, body: Bytes) -> Judged {
    // Unknown mch_id, return_code FAIL, another appid, no req_info, or a
    // req_info that does not decrypt: refused, nothing read or kept.
    let proven = match proof::refund(&state.merchants, &body) {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let raw_no = proven.message().get("out_trade_no").cloned();
    let notice = proven.read(|inner| RefundNotice::from(read_update(inner)));
    refund_notice::conclude(state, &notice, raw_no.as_deref()).await
}

/// The refund the decrypted `req_info` describes; `None` when a field we act on
/// is missing or not in WeChat's format (the message is then refused unread).
fn read_update(inner: &Fields) -> Option<RefundUpdate> {
    let iget = |k: &str| inner.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let out_trade_no = OutTradeNo::parse(iget("out_trade_no")?).ok()?;
    let status = RefundStatus::from_wechat(iget("refund_status")?)?;
    let success_time = match iget("success_time") {
        Some(t) => Some(china_time::parse_readable(t)?),
        None => None,
    };
    Some(RefundUpdate {
        out_refund_no: OutRefundNo::parse(iget("out_refund_no")?).ok()?,
        out_trade_no,
        refund_fee: Fee::parse_wire("refund_fee", iget("refund_fee")?).ok()?,
        refund_id: iget("refund_id").map(str::to_owned),
        transaction_id: iget("transaction_id").map(str::to_owned),
        total_fee: match iget("total_fee") {
            Some(t) => Some(Fee::parse_wire("total_fee", t).ok()?),
            None => None,
        },
        status,
        succeeded_at: success_time,
        failure: None,
    })
}
