//! What the v3 refund endpoints do once `v3_api` has authenticated the call:
//! `POST /v3/refund/domestic/refunds` applies for a refund on the shared
//! order book (the same refunds, limits and idempotency as v2's
//! `/secapi/pay/refund`, without a client certificate), and `GET
//! /v3/refund/domestic/refunds/{out_refund_no}` tells where one stands. A
//! refund settles on its own after `refund_settle_after`, or when the control
//! API says so; its notification then goes out in v3 (`control` and `notify`).

use std::collections::BTreeMap;

use chrono::Utc;
use wxpay_core::wechat::v3::models::RefundAnswer;

use crate::{
    orders::RefundRef,
    state::AppState,
    v3_protocol::{self, V3Error},
    wechat_api::settle_later,
};

/// `POST /v3/refund/domestic/refunds` for the merchant `mch_id` signed as:
/// the refund as accepted (PROCESSING), or as it stands now for a repeat of
/// the same request. The `notenough` fault refuses it with 403 NOT_ENOUGH
/// after the request was checked, changing nothing, as v2's refund does.
pub(crate) fn apply(state: &AppState, mch_id: &str, body: &[u8]) -> Result<RefundAnswer, V3Error> {
    let now = Utc::now();
    let (owner, new) = v3_protocol::refund_request(body, mch_id, state.accounts())?;
    if state.faults().take_notenough() {
        return Err(V3Error::not_enough());
    }
    let refund = state
        .orders()
        .apply_refund(&owner, new, now)
        .map_err(v3_protocol::refund_error)?;
    if let Some(after) = state.config().refund_settle_after {
        // A repeat's timer finds the refund settled and does nothing.
        settle_later(state.clone(), refund.out_refund_no.clone(), after);
    }
    Ok(v3_protocol::refund_answer(&refund))
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}[?sub_mchid=…]`: the
/// refund as it stands, if it is the caller's (a v2 refund of the same
/// merchant too: one book).
pub(crate) fn query(
    state: &AppState,
    mch_id: &str,
    out_refund_no: &str,
    query: &BTreeMap<String, String>,
) -> Result<RefundAnswer, V3Error> {
    let owner = v3_protocol::refund_owner(
        state.accounts(),
        mch_id,
        query.get("sub_mchid").map(String::as_str),
    )?;
    let reference = RefundRef::OutRefundNo(out_refund_no.to_owned());
    let orders = state.orders();
    let (_, refunds) = orders
        .query_refunds(&owner, &reference)
        .ok_or_else(|| V3Error::resource_not_exists("退款单不存在"))?;
    refunds
        .first()
        .map(|r| v3_protocol::refund_answer(r))
        .ok_or_else(|| V3Error::resource_not_exists("退款单不存在"))
}
