//! What the gateway decided about one notification, and what that means for the
//! reply: WeChat (or the cloud-pay forwarder) is told SUCCESS only when there is
//! nothing left for it to retry, and every verdict is counted under one name
//! (with the merchant it was for, once one is known: see [`Judged`]).

use std::fmt;

/// Which endpoint a notification came in on (a metric label and the audit `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pay,
    Refund,
    Cloudpay,
    /// `POST /wechat/v3/pay/notify`.
    PayV3,
    /// `POST /wechat/v3/refund/notify`.
    RefundV3,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pay => "pay",
            Kind::Refund => "refund",
            Kind::Cloudpay => "cloudpay",
            Kind::PayV3 => "pay_v3",
            Kind::RefundV3 => "refund_v3",
        }
    }
}

/// The outcome of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The order's status changed; the change and its event are committed.
    Applied,
    /// The same change was already applied (WeChat retries and sends copies).
    Duplicate,
    /// Genuine, but it contradicts a final state (paid under another transaction_id,
    /// paid after being closed): recorded as an anomaly. Retrying cannot change it.
    Conflict,
    /// Genuine, but there is nothing to apply (return_code FAIL, a refund that is
    /// not SUCCESS, a failure report for an order already decided).
    Ignored,
    /// Body over 64 KiB (answered 413).
    TooLarge,
    /// Not a well-formed flat message: XML/JSON error, DOCTYPE or entities,
    /// duplicate fields, invalid UTF-8, a body that could not be read.
    Malformed,
    /// Missing or wrong signature (or HMAC, or a req_info that does not decrypt).
    BadSignature,
    /// Signed, but for another appid or mch_id.
    WrongMerchant,
    /// Signed, but the out_trade_no is not ours: anomaly; WeChat keeps retrying.
    UnknownOrder,
    /// Signed, but total_fee/fee_type (or a refund amount) disagrees with the order: anomaly.
    AmountMismatch,
    /// Signed, but the order is not in a state this message can act on yet
    /// (a refund for an unpaid order): anomaly; a retry may succeed later.
    WrongState,
    /// A required field is missing or unreadable.
    Invalid,
    /// The database (or, for a cloud-pay SUCCESS, WeChat's orderquery) could
    /// not be reached: the sender must retry.
    Unavailable,
    /// A proven cloud-pay SUCCESS that WeChat's orderquery does not confirm
    /// (not paid, or another transaction or amount): nothing is paid.
    Unconfirmed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Conflict => "conflict",
            Verdict::Ignored => "ignored",
            Verdict::TooLarge => "too_large",
            Verdict::Malformed => "malformed",
            Verdict::BadSignature => "bad_signature",
            Verdict::WrongMerchant => "wrong_merchant",
            Verdict::UnknownOrder => "unknown_order",
            Verdict::AmountMismatch => "amount_mismatch",
            Verdict::WrongState => "wrong_state",
            Verdict::Invalid => "invalid",
            Verdict::Unavailable => "unavailable",
            Verdict::Unconfirmed => "unconfirmed",
        }
    }

    /// Whether the sender is told SUCCESS (and stops retrying). No `_` arm: a new
    /// verdict does not compile until someone decides what WeChat hears.
    pub fn acknowledged(self) -> bool {
        match self {
            Verdict::Applied | Verdict::Duplicate | Verdict::Conflict | Verdict::Ignored => true,
            Verdict::TooLarge
            | Verdict::Malformed
            | Verdict::BadSignature
            | Verdict::WrongMerchant
            | Verdict::UnknownOrder
            | Verdict::AmountMismatch
            | Verdict::WrongState
            | Verdict::Invalid
            | Verdict::Unavailable
            | Verdict::Unconfirmed => false,
        }
    }

    /// The short reason sent back with a FAIL (`return_msg` / `errmsg`): a fixed
    /// word, never internal detail.
    pub fn public_message(self) -> &'static str {
        if self.acknowledged() {
            "OK"
        } else {
            match self {
                Verdict::Unavailable => "SYSTEMERROR",
                Verdict::BadSignature => "SIGNERROR",
                _ => self.as_str(),
            }
        }
    }
}

/// A verdict and the configured merchant (its name in the
/// [`MerchantBook`](wxpay_core::wechat::MerchantBook)) the message was judged
/// for: what the notification counter is labelled with. `None` when the
/// message was refused before a merchant was known (unparseable, unsigned, an
/// mch_id this deployment does not serve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub merchant: Option<String>,
}

impl Judged {
    /// A verdict reached before any merchant was known.
    pub fn anonymous(verdict: Verdict) -> Self {
        Self {
            verdict,
            merchant: None,
        }
    }

    /// A verdict about a message for the merchant named `merchant`.
    pub fn for_merchant(verdict: Verdict, merchant: &str) -> Self {
        Self {
            verdict,
            merchant: Some(merchant.to_owned()),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settled_outcomes_are_acknowledged() {
        for v in [
            Verdict::Applied,
            Verdict::Duplicate,
            Verdict::Conflict,
            Verdict::Ignored,
        ] {
            assert!(v.acknowledged(), "{v}");
            assert_eq!(v.public_message(), "OK");
        }
        for v in [
            Verdict::TooLarge,
            Verdict::Malformed,
            Verdict::BadSignature,
            Verdict::WrongMerchant,
            Verdict::UnknownOrder,
            Verdict::AmountMismatch,
            Verdict::WrongState,
            Verdict::Invalid,
            Verdict::Unavailable,
            Verdict::Unconfirmed,
        ] {
            assert!(!v.acknowledged(), "{v}");
        }
    }
}
