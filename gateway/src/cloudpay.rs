//! `POST /cloudpay/callback`: the cloud-development (`cloud.cloudPay`) variant.
//! A cloud function forwards WeChat's camelCase JSON callback with an
//! HMAC-SHA256 (hex) of the raw body under `CLOUDPAY_CALLBACK_SECRET` in
//! `X-Cloudpay-Signature`; nothing in the body is read before that HMAC checks.
//! The HMAC proves the forwarder, not a merchant, so the merchant is the
//! order's: once the order is loaded its merchant must still be configured and
//! `subMchId` (when sent) must be that merchant's payee. The result then goes
//! through the same [`crate::payment::settle`] as the XML notification.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use wxpay_core::{
    domain::{EventSource, Fee, OutTradeNo, TransactionId},
    wechat::china_time,
};

use crate::{
    config::CloudpaySecret,
    payment::{self, PaymentReport, Reported},
    state::AppState,
    verdict::{Judged, Kind, Verdict},
};
use wxpay_store::AnomalyKind;

/// The header carrying the forwarder's signature.
pub const SIGNATURE_HEADER: &str = "x-cloudpay-signature";

/// Lowercase hex HMAC-SHA256 of `body` (what the forwarder sends; node's `digest('hex')`).
pub fn sign_body(secret: &CloudpaySecret, body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

fn mac(secret: &CloudpaySecret, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    mac
}

/// Constant-time check of a hex signature (either case).
fn verify(secret: &CloudpaySecret, body: &[u8], signature: Option<&str>) -> bool {
    match signature.and_then(|s| hex::decode(s.trim()).ok()) {
        Some(given) => mac(secret, body).verify_slice(&given).is_ok(),
        None => false,
    }
}

/// WeChat's callback fields we read; the rest are ignored (the HMAC covers them all).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Callback {
    return_code: Option<String>,
    result_code: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    total_fee: Option<Amount>,
    cash_fee: Option<Amount>,
    fee_type: Option<String>,
    sub_mch_id: Option<String>,
    time_end: Option<String>,
}

/// Fen as a JSON integer or a decimal string; a fractional JSON number matches
/// neither and the message is refused (no floats near money).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Fen(i64),
    Text(String),
}

impl Amount {
    fn fee(&self) -> Option<Fee> {
        match self {
            Amount::Fen(fen) => Fee::new(*fen).ok(),
            Amount::Text(s) => Fee::parse_wire("totalFee", s).ok(),
        }
    }

    fn fen(&self) -> Option<i64> {
        match self {
            Amount::Fen(fen) => Some(*fen),
            Amount::Text(s) => s.parse().ok(),
        }
        .filter(|fen| *fen >= 0)
    }
}

/// Processes one callback; `secret` is the configured one (the caller answers
/// 404 when there is none).
pub async fn process(
    state: &AppState,
    secret: &CloudpaySecret,
    signature: Option<&str>,
    body: &[u8],
) -> Judged {
    if !verify(secret, body, signature) {
        // Not kept: unauthenticated bytes on a public endpoint are not worth a row.
        tracing::warn!(
            bytes = body.len(),
            "cloud-pay callback with a bad or missing signature refused"
        );
        return Judged::anonymous(Verdict::BadSignature);
    }
    let callback: Callback = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "malformed cloud-pay callback refused");
            return Judged::anonymous(Verdict::Malformed);
        }
    };
    let out_trade_no = callback.out_trade_no.clone();
    let (verdict, merchant) = judge(state, callback).await;
    tracing::info!(out_trade_no = out_trade_no.as_deref(), merchant, %verdict, "cloud-pay callback");
    state
        .keep(
            Kind::Cloudpay,
            out_trade_no.as_deref(),
            verdict,
            body,
            false,
        )
        .await;
    Judged {
        verdict,
        merchant: merchant.map(str::to_owned),
    }
}

/// The verdict, and the configured merchant of the callback's order once it is
/// known.
async fn judge(state: &AppState, c: Callback) -> (Verdict, Option<&str>) {
    let anonymous = |v: Verdict| (v, None);
    if c.return_code.as_deref() != Some("SUCCESS") {
        // As for the XML notification: no business result to apply, and a retry
        // would bring the same nothing.
        return anonymous(Verdict::Ignored);
    }
    let Some(out_trade_no) = c
        .out_trade_no
        .as_deref()
        .and_then(|s| OutTradeNo::parse(s).ok())
    else {
        return anonymous(Verdict::Invalid);
    };
    let result = match c.result_code.as_deref() {
        Some("SUCCESS") => {
            let Some(transaction_id) = c
                .transaction_id
                .as_deref()
                .and_then(|s| TransactionId::parse(s).ok())
            else {
                return anonymous(Verdict::Invalid);
            };
            Reported::Paid {
                transaction_id: transaction_id.as_str().to_owned(),
                cash_fee: c.cash_fee.as_ref().and_then(Amount::fen),
                paid_at: c.time_end.as_deref().and_then(china_time::parse),
            }
        }
        Some("FAIL") => Reported::Failed,
        _ => return anonymous(Verdict::Invalid),
    };
    let order = match state.store.order(&out_trade_no).await {
        Ok(order) => order,
        Err(e) => return anonymous(payment::store_failure(out_trade_no.as_str(), e)),
    };
    // The callback names no merchant we could look up first (its subMchId is
    // the payee's number, which the forwarder sends for every merchant), so
    // the order says whose it is. An unknown order has no merchant to check
    // and is left to `settle`, which records it.
    let merchant = match &order {
        None => None,
        Some(o) => {
            let name = o.placement.merchant.as_str();
            let Some(entry) = state.merchants.get(name) else {
                // Placed under a merchant this deployment no longer serves:
                // nothing here can say the money reached that account.
                state
                    .anomaly(
                        AnomalyKind::WrongMerchant,
                        out_trade_no.as_str(),
                        format!("a cloud-pay callback for an order of merchant {name}, which is not configured"),
                    )
                    .await;
                return anonymous(Verdict::WrongMerchant);
            };
            if let Some(sub) = c
                .sub_mch_id
                .as_deref()
                .filter(|m| *m != entry.payee_mch_id())
            {
                // Paid to another account than the order's merchant's.
                state
                    .anomaly(
                        AnomalyKind::WrongMerchant,
                        out_trade_no.as_str(),
                        format!(
                            "a cloud-pay callback names subMchId {sub}; the order's merchant {name} is paid as {}",
                            entry.payee_mch_id()
                        ),
                    )
                    .await;
                return (Verdict::WrongMerchant, Some(entry.name.as_str()));
            }
            Some(entry.name.as_str())
        }
    };
    let report = PaymentReport {
        out_trade_no,
        total_fee: c.total_fee.as_ref().and_then(Amount::fee),
        fee_type: c.fee_type,
        result,
    };
    (
        payment::settle(state, order, report, EventSource::Cloudpay).await,
        merchant,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_either_case_and_only_for_the_same_body() {
        let secret = CloudpaySecret::parse("0123456789abcdef0123").expect("secret");
        let body = br#"{"outTradeNo":"A1"}"#;
        let sig = sign_body(&secret, body);
        assert!(verify(&secret, body, Some(&sig)));
        assert!(verify(&secret, body, Some(&sig.to_uppercase())));
        assert!(!verify(&secret, br#"{"outTradeNo":"A2"}"#, Some(&sig)));
        assert!(!verify(&secret, body, None));
        assert!(!verify(&secret, body, Some("zz")));
        let other = CloudpaySecret::parse("another-secret-of-length").expect("secret");
        assert!(!verify(&other, body, Some(&sig)));
    }

    #[test]
    fn fractional_amounts_are_not_money() {
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("101")
                .ok()
                .and_then(|a| a.fee())
                .map(Fee::fen),
            Some(101)
        );
        assert_eq!(
            serde_json::from_str::<Amount>("\"101\"")
                .ok()
                .and_then(|a| a.fee())
                .map(Fee::fen),
            Some(101)
        );
    }
}
