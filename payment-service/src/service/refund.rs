//! RefundOrder, GetRefund, and settling refunds with WeChat. A refund is stored
//! (PROCESSING) before WeChat is asked, under the order's lock and within what
//! is left of its total; WeChat's answer is then recorded: accepted (its
//! refund_id kept; the money moves later and a notification or refundquery says
//! when), refused outright (CLOSED, the money free again), or unknown (a timeout:
//! the refund stays PROCESSING and the reconciler asks refundquery, re-sending
//! the same refund number only if WeChat never saw it). No path ever sends a
//! refund under a new number, so no retry can give money back twice. All of
//! it goes through `WechatApi`, so v2 and v3 merchants' refunds share these
//! rows, limits, locks and rules; v3 may answer a repeated refund number with
//! the refund already settled, which is recorded as it stands.

use wxpay_core::domain::{
    Fee, NewRefund, Order, OutRefundNo, OutTradeNo, Refund, RefundReason, RefundStatus,
};
use wxpay_runtime::access::MerchantScope;
use wxpay_store::{
    Anomaly, AnomalyKind, DueRefund, RefundOutcome, RefundPlacement, RefundUpdate,
    MAX_REFUNDS_PER_ORDER,
};

use super::Payments;
use crate::{
    error::ApiError,
    wechat::{RefundState, WechatError},
};

/// RefundOrder's fields as they arrive, before validation.
#[derive(Debug, Clone)]
pub struct RefundInput {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub refund_fee: i64,
    pub reason: String,
}

/// What the reconciler's question about one refund came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundCheck {
    /// WeChat is still moving the money.
    StillProcessing,
    /// The refund reached a new status here.
    Settled(RefundStatus),
    /// WeChat had never seen it; it was sent again under the same number.
    Resent,
}

impl Payments {
    /// Stores the refund and asks WeChat for it. The same request again returns
    /// the refund as it stands and calls WeChat no second time. An order
    /// outside `scope` is NOT_FOUND: nothing is stored and WeChat is not asked.
    #[tracing::instrument(skip_all, fields(out_trade_no = %input.out_trade_no, out_refund_no = %input.out_refund_no))]
    pub async fn refund_order(
        &self,
        scope: &MerchantScope,
        input: RefundInput,
    ) -> Result<Refund, ApiError> {
        let new = NewRefund {
            out_trade_no: OutTradeNo::parse(&input.out_trade_no)?,
            out_refund_no: OutRefundNo::parse(&input.out_refund_no)?,
            refund_fee: Fee::for_field("refund_fee", input.refund_fee)?,
            reason: RefundReason::parse(&input.reason)?,
        };
        // Checked before anything is stored: a refund that cannot be sent
        // would hold the order's money as PROCESSING for nothing.
        let order = self.get_order_within(scope, &new.out_trade_no).await?;
        let wechat = self.wechat_for(&order)?;
        if let Some(why) = wechat.refund_blocker() {
            return Err(ApiError::FailedPrecondition(why));
        }
        let refund = match self.store.insert_refund(&new).await? {
            RefundPlacement::Placed(refund) => refund,
            RefundPlacement::Existing(refund) if refund.is_same_request(&new) => return Ok(refund),
            RefundPlacement::Existing(_) => {
                return Err(ApiError::AlreadyExists(format!(
                    "out_refund_no {} is already used by a refund with other fields",
                    new.out_refund_no
                )))
            }
            RefundPlacement::OrderNotFound => return Err(ApiError::NotFound("order")),
            RefundPlacement::NotPaid(status) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "the order is {status}; only a paid order can be refunded"
                )))
            }
            RefundPlacement::Exceeds { available } => {
                return Err(ApiError::FailedPrecondition(format!(
                    "refund_fee {} is more than the {available} fen left to refund on this order",
                    new.refund_fee
                )))
            }
            RefundPlacement::TooMany => {
                return Err(ApiError::FailedPrecondition(format!(
                    "the order already has {MAX_REFUNDS_PER_ORDER} refunds, WeChat's limit"
                )))
            }
        };
        metrics::counter!("wxpay_refunds_requested_total", "merchant" => wechat.entry().name.clone())
            .increment(1);
        // What the request uses of the order (number, total, sign type,
        // merchant) never changes, so the read above serves.
        self.send_refund(&order, refund).await
    }

    pub async fn get_refund(&self, out_refund_no: &OutRefundNo) -> Result<Refund, ApiError> {
        self.store
            .refund(out_refund_no)
            .await?
            .ok_or(ApiError::NotFound("refund"))
    }

    /// GetRefund for a caller confined to `scope`: a refund of another
    /// merchant's order is the error a missing refund number gives. Its order
    /// is read only for a confined caller.
    pub async fn get_refund_within(
        &self,
        scope: &MerchantScope,
        out_refund_no: &OutRefundNo,
    ) -> Result<Refund, ApiError> {
        let refund = self.get_refund(out_refund_no).await?;
        if *scope == MerchantScope::All {
            return Ok(refund);
        }
        match self.store.order(&refund.out_trade_no).await? {
            Some(order) if scope.allows(&order.placement.merchant) => Ok(refund),
            _ => {
                tracing::info!(%out_refund_no,
                    "a refund outside the caller's merchants was asked for: answered as not found");
                Err(ApiError::NotFound("refund"))
            }
        }
    }

    /// Sends the stored PROCESSING `refund` to WeChat and records the answer;
    /// returns the refund as it then stands, or WeChat's refusal.
    async fn send_refund(&self, order: &Order, refund: Refund) -> Result<Refund, ApiError> {
        let sent = self.wechat_for(order)?.refund(order, &refund).await;
        match sent {
            Ok(accepted) => {
                // Usually PROCESSING (the refund_id kept); v3 answers a refund
                // it already had (the same number again, after a lost reply)
                // with where it stands, which is applied as a query's answer is.
                let update = self.update_for(order, &refund, accepted.status);
                let outcome = self
                    .ledger
                    .apply_refund(&RefundUpdate {
                        refund_id: Some(accepted.refund_id),
                        transaction_id: accepted.transaction_id,
                        succeeded_at: accepted.success_time,
                        ..update
                    })
                    .await?;
                self.settled_refund(outcome, &refund).await
            }
            Err(e) if refused_outright(&e) => {
                let code = match &e {
                    WechatError::Business { code, .. } => code.clone(),
                    other => format!("FAIL: {other}"),
                };
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %e, "WeChat refused the refund; it is closed");
                let update = self.update_for(order, &refund, RefundStatus::Closed);
                self.ledger
                    .apply_refund(&RefundUpdate {
                        failure: Some(code),
                        ..update
                    })
                    .await?;
                Err(refusal(e))
            }
            Err(e) => {
                // Unknown: WeChat may have taken it. The refund stays PROCESSING
                // (its money held) and the reconciler finds out soon.
                tracing::warn!(out_refund_no = %refund.out_refund_no, error = %e,
                    "refund outcome unknown; refundquery will resolve it");
                // Nothing to schedule: a PROCESSING refund is claimed by the
                // reconciler once RECONCILE_AFTER_SECONDS have passed.
                metrics::counter!("wxpay_refunds_unknown_outcome_total").increment(1);
                Ok(self.get_refund(&refund.out_refund_no).await?)
            }
        }
    }

    /// Asks WeChat about a PROCESSING refund the reconciler claimed and applies
    /// the answer; a refund WeChat never saw is sent again under its own number.
    pub async fn check_refund(&self, due: &DueRefund) -> Result<RefundCheck, ApiError> {
        let DueRefund { refund, order, .. } = due;
        let state = self
            .wechat_for(order)?
            .refund_query(order, &refund.out_refund_no)
            .await?;
        let Some(state) = state else {
            let now = self.send_refund(order, refund.clone()).await;
            return match now {
                // v3 may answer a refund it already settled (the query and
                // the send raced WeChat's own bookkeeping): settled, not resent.
                Ok(now) if now.status != RefundStatus::Processing => {
                    Ok(RefundCheck::Settled(now.status))
                }
                Ok(_) => Ok(RefundCheck::Resent),
                // Refused now: closed (done by send_refund), which is settled.
                Err(ApiError::FailedPrecondition(_)) => {
                    Ok(RefundCheck::Settled(RefundStatus::Closed))
                }
                Err(e) => Err(e),
            };
        };
        if state.status == RefundStatus::Processing {
            return Ok(RefundCheck::StillProcessing);
        }
        let outcome = self
            .ledger
            .apply_refund(&update_from_state(order, refund, &state))
            .await?;
        let settled = self.settled_refund(outcome, refund).await?;
        Ok(RefundCheck::Settled(settled.status))
    }

    /// The update that records `status` for a refund we placed.
    fn update_for(&self, order: &Order, refund: &Refund, status: RefundStatus) -> RefundUpdate {
        RefundUpdate {
            out_refund_no: refund.out_refund_no.clone(),
            out_trade_no: order.out_trade_no.clone(),
            refund_fee: refund.refund_fee,
            refund_id: None,
            transaction_id: None,
            total_fee: None,
            status,
            succeeded_at: None,
            failure: None,
        }
    }
}

/// What refundquery said about `refund` (the reply was matched to its number).
fn update_from_state(order: &Order, refund: &Refund, state: &RefundState) -> RefundUpdate {
    RefundUpdate {
        out_refund_no: refund.out_refund_no.clone(),
        out_trade_no: order.out_trade_no.clone(),
        refund_fee: state.refund_fee,
        refund_id: state.refund_id.clone(),
        transaction_id: state.transaction_id.clone(),
        total_fee: state.total_fee,
        status: state.status,
        succeeded_at: state.success_time,
        failure: None,
    }
}

impl Payments {
    /// The refund after an update, or why it could not be applied (recorded as
    /// an anomaly: WeChat and this store disagree about money).
    async fn settled_refund(
        &self,
        outcome: RefundOutcome,
        refund: &Refund,
    ) -> Result<Refund, ApiError> {
        let detail = match outcome {
            RefundOutcome::Applied { refund, .. } | RefundOutcome::Unchanged { refund } => {
                return Ok(refund)
            }
            RefundOutcome::Mismatch { detail } => detail,
            RefundOutcome::OrderNotFound => "the refund's order is gone".to_owned(),
            RefundOutcome::NotPaid(status) => format!("the refund's order is {status}"),
            RefundOutcome::Exceeds { available } => {
                format!("the refund exceeds the {available} fen left")
            }
        };
        tracing::error!(out_refund_no = %refund.out_refund_no, %detail, "WeChat's word on a refund contradicts the store");
        metrics::counter!("wxpay_anomalies_total", "kind" => AnomalyKind::RefundConflict.as_str())
            .increment(1);
        self.store
            .record_anomaly(&Anomaly {
                kind: AnomalyKind::RefundConflict,
                out_trade_no: Some(refund.out_trade_no.to_string()),
                detail: format!("refund {}: {detail}", refund.out_refund_no),
            })
            .await?;
        Err(ApiError::Internal(detail))
    }
}

/// WeChat definitely did not take the refund: a business refusal other than
/// "busy, retry", or a FAIL reply (no certificate, bad signature). The same
/// rule serves v3, whose refusals are 4xx answers with a code (`NOT_ENOUGH`,
/// `USER_ACCOUNT_ABNORMAL`, `RESOURCE_NOT_EXISTS`, `INVALID_REQUEST`,
/// `PARAM_ERROR`, `NO_AUTH`, `SIGN_ERROR`, …): its `SYSTEM_ERROR` and
/// `BANK_ERROR` are retry codes and `FREQUENCY_LIMITED` is excepted here, so
/// those stay unknown; a 5xx with any other code, a 2xx that failed
/// verification (`Untrusted`) or does not match what was asked reaches here
/// as `BadReply`: unknown, never a refusal.
fn refused_outright(e: &WechatError) -> bool {
    match e {
        // Never sent: WeChat has nothing to refund.
        WechatError::Return(_) | WechatError::Request(_) => true,
        WechatError::Business { .. } => !e.is_retryable() && e.code() != Some("FREQUENCY_LIMITED"),
        WechatError::Transport(_)
        | WechatError::Timeout
        | WechatError::BadReply(_)
        | WechatError::BillHash(_) => false,
    }
}

/// WeChat's refusal of a refund, with its err_code, for the caller.
fn refusal(e: WechatError) -> ApiError {
    match e {
        WechatError::Business { code, message } => {
            // v2's spellings, then v3's (USER_ACCOUNT_ABNORMAL is both).
            let why = match code.as_str() {
                "NOTENOUGH" | "NOT_ENOUGH" => "the merchant's balance is not enough",
                "TRADE_OVERDUE" => "the order is more than a year old",
                "USER_ACCOUNT_ABNORMAL" => "the payer's account is abnormal",
                "RESOURCE_NOT_EXISTS" => "WeChat Pay has no paid order by this number",
                "INVALID_REQUEST" => "WeChat Pay's rules do not allow this refund",
                "PARAM_ERROR" => "WeChat Pay refused a field of the refund",
                _ => "WeChat Pay refused the refund",
            };
            ApiError::FailedPrecondition(format!("{why} ({code}: {message}); the refund is closed"))
        }
        WechatError::Return(msg) => ApiError::FailedPrecondition(format!(
            "WeChat Pay refused the refund request ({msg}); the refund is closed"
        )),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn business(code: &str) -> WechatError {
        WechatError::Business {
            code: code.into(),
            message: format!("{code} described"),
        }
    }

    #[test]
    fn only_a_definite_refusal_closes_a_refund_in_either_dialect() {
        // v2's refusals, then v3's: WeChat did not take the refund.
        for code in [
            "NOTENOUGH",
            "TRADE_OVERDUE",
            "NOT_ENOUGH",
            "USER_ACCOUNT_ABNORMAL",
            "RESOURCE_NOT_EXISTS",
            "INVALID_REQUEST",
            "PARAM_ERROR",
            "SIGN_ERROR",
        ] {
            assert!(refused_outright(&business(code)), "{code}");
        }
        assert!(refused_outright(&WechatError::Return("SIGNERROR".into())));
        // Busy, or no answer we can believe: WeChat may have it.
        for code in [
            "SYSTEMERROR",
            "BIZERR_NEED_RETRY",
            "SYSTEM_ERROR",
            "BANK_ERROR",
            "FREQUENCY_LIMITED",
        ] {
            assert!(!refused_outright(&business(code)), "{code}");
        }
        for unknown in [
            WechatError::Timeout,
            WechatError::Transport("reset".into()),
            WechatError::BadReply("its signature did not verify".into()),
        ] {
            assert!(!refused_outright(&unknown), "{unknown:?}");
        }
    }

    #[test]
    fn a_refusal_tells_the_caller_why_and_that_the_refund_is_closed() {
        let ApiError::FailedPrecondition(why) = refusal(business("NOT_ENOUGH")) else {
            panic!("a refusal is FAILED_PRECONDITION");
        };
        assert!(why.contains("balance is not enough"), "{why}");
        assert!(why.contains("NOT_ENOUGH"), "{why}");
        assert!(why.contains("the refund is closed"), "{why}");
    }
}
