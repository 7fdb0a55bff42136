//! The refund half of the WeChat client: `/secapi/pay/refund` (which WeChat
//! serves only over the merchant's client certificate) and `/pay/refundquery`.
//! Signed, sent and verified by the same `call` as every other request; this
//! module only knows the refund fields and reads the replies strictly: an
//! amount or number in a reply that is not ours is a reply we do not act on.

use wxpay_core::{
    domain::{Fee, RefundStatus},
    wechat::{china_time, Fields, SignType},
};

use super::{RefundRequest, V2Client};
use crate::wechat::{RefundAccepted, RefundState, WechatError};

impl V2Client {
    /// Asks WeChat to give `refund_fee` back. The same `out_refund_no` again is
    /// the same refund at WeChat, so a retry (here or by the reconciler) can never
    /// refund twice.
    #[tracing::instrument(skip_all, fields(out_trade_no = req.out_trade_no, out_refund_no = req.out_refund_no))]
    pub async fn refund(&self, req: &RefundRequest<'_>) -> Result<RefundAccepted, WechatError> {
        let mut fields = self.base_fields();
        let total_fee = req.total_fee.to_string();
        let refund_fee = req.refund_fee.to_string();
        for (k, v) in [
            ("out_trade_no", req.out_trade_no),
            ("out_refund_no", req.out_refund_no),
            ("total_fee", total_fee.as_str()),
            ("refund_fee", refund_fee.as_str()),
            ("refund_desc", req.reason),
            ("notify_url", req.notify_url),
        ] {
            if !v.is_empty() {
                fields.insert(k.into(), v.into());
            }
        }
        let reply = self
            .call("/secapi/pay/refund", fields, req.sign_type)
            .await?;
        let get = |k: &str| reply.get(k).map(String::as_str);
        if get("out_refund_no") != Some(req.out_refund_no) {
            return Err(WechatError::BadReply(
                "the reply is about another refund".into(),
            ));
        }
        if get("refund_fee") != Some(refund_fee.as_str()) {
            return Err(WechatError::BadReply(format!(
                "the reply's refund_fee {:?} is not the {refund_fee} asked for",
                get("refund_fee")
            )));
        }
        match get("refund_id") {
            Some(id) if !id.is_empty() => Ok(RefundAccepted::processing(id.to_owned())),
            _ => Err(WechatError::BadReply(
                "no refund_id in a successful reply".into(),
            )),
        }
    }

    /// refundquery by `out_refund_no`: the refund's state at WeChat, or `None`
    /// when WeChat has no such refund (REFUNDNOTEXIST: the request never
    /// reached it).
    #[tracing::instrument(skip(self))]
    pub async fn refund_query(
        &self,
        out_refund_no: &str,
        sign_type: SignType,
    ) -> Result<Option<RefundState>, WechatError> {
        let mut fields = self.base_fields();
        fields.insert("out_refund_no".into(), out_refund_no.into());
        let reply = match self.call("/pay/refundquery", fields, sign_type).await {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("REFUNDNOTEXIST") => return Ok(None),
            Err(e) => return Err(e),
        };
        refund_in(&reply, out_refund_no).map(Some)
    }
}

/// Finds `out_refund_no` among the `_$n` entries of a refundquery reply (the
/// reply may list every refund of the order).
fn refund_in(reply: &Fields, out_refund_no: &str) -> Result<RefundState, WechatError> {
    let get = |k: String| reply.get(&k).map(String::as_str);
    let count: usize = get("refund_count".into())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| WechatError::BadReply("missing or bad refund_count".into()))?;
    // WeChat lists at most 50 refunds per order; a larger count is not a reply to trust.
    if count > 50 {
        return Err(WechatError::BadReply(format!("refund_count {count}")));
    }
    let n = (0..count)
        .find(|n| get(format!("out_refund_no_{n}")) == Some(out_refund_no))
        .ok_or_else(|| WechatError::BadReply("the reply does not list the refund".into()))?;
    let refund_fee = get(format!("refund_fee_{n}"))
        .ok_or_else(|| WechatError::BadReply(format!("no refund_fee_{n}")))
        .and_then(|s| {
            Fee::parse_wire("refund_fee", s).map_err(|e| WechatError::BadReply(e.to_string()))
        })?;
    let status = get(format!("refund_status_{n}"))
        .and_then(RefundStatus::from_wechat)
        .ok_or_else(|| WechatError::BadReply(format!("missing or unknown refund_status_{n}")))?;
    Ok(RefundState {
        out_refund_no: out_refund_no.to_owned(),
        refund_id: get(format!("refund_id_{n}"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        refund_fee,
        status,
        success_time: get(format!("refund_success_time_{n}")).and_then(china_time::parse_readable),
        transaction_id: get("transaction_id".into())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        total_fee: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_asked_refund_is_found_among_the_orders_refunds() {
        let r = reply(&[
            ("refund_count", "2"),
            ("transaction_id", "4200000001"),
            ("out_refund_no_0", "R1"),
            ("refund_fee_0", "10"),
            ("refund_status_0", "SUCCESS"),
            ("out_refund_no_1", "R2"),
            ("refund_id_1", "50000002"),
            ("refund_fee_1", "25"),
            ("refund_status_1", "REFUNDCLOSE"),
        ]);
        let state = refund_in(&r, "R2").expect("listed");
        assert_eq!(state.refund_fee.fen(), 25);
        assert_eq!(state.status, RefundStatus::Closed);
        assert_eq!(state.refund_id.as_deref(), Some("50000002"));
        assert_eq!(state.transaction_id.as_deref(), Some("4200000001"));
        assert!(refund_in(&r, "R3").is_err(), "a refund not listed");
    }

    #[test]
    fn unreadable_entries_are_not_acted_on() {
        for bad in [
            reply(&[("refund_count", "x")]),
            reply(&[("refund_count", "51")]),
            reply(&[
                ("refund_count", "1"),
                ("out_refund_no_0", "R1"),
                ("refund_fee_0", "1.00"),
                ("refund_status_0", "SUCCESS"),
            ]),
            reply(&[
                ("refund_count", "1"),
                ("out_refund_no_0", "R1"),
                ("refund_fee_0", "100"),
                ("refund_status_0", "DONE"),
            ]),
        ] {
            assert!(refund_in(&bad, "R1").is_err(), "{bad:?}");
        }
    }
}
