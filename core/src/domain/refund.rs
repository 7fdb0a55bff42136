//! Refunds: a refund as requested and as stored, and its status with the small
//! state machine WeChat's refund states follow. Like orders, nothing here does
//! I/O; storage enforces these rules in the transaction that changes a refund.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};

use super::{Fee, OutRefundNo, OutTradeNo, RefundReason, ValidationError};

/// Where a refund stands. WeChat's `refund_status` names map onto it
/// (`REFUNDCLOSE` is [`RefundStatus::Closed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Stored before WeChat is asked, and while WeChat is moving the money.
    Processing,
    /// The money is back with the payer.
    Success,
    /// WeChat could not return the money to the original account (a closed card,
    /// …): someone must handle it in the merchant console. Not final at WeChat.
    Change,
    /// The refund will never happen (refused at request, or closed by WeChat).
    Closed,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 4] = [
        RefundStatus::Processing,
        RefundStatus::Success,
        RefundStatus::Change,
        RefundStatus::Closed,
    ];

    /// Our spelling, used in the database and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Change => "CHANGE",
            RefundStatus::Closed => "CLOSED",
        }
    }

    /// WeChat's `refund_status` (notification) or `refund_status_$n` (refundquery).
    pub fn from_wechat(s: &str) -> Option<Self> {
        match s {
            "PROCESSING" => Some(RefundStatus::Processing),
            "SUCCESS" => Some(RefundStatus::Success),
            "CHANGE" => Some(RefundStatus::Change),
            "REFUNDCLOSE" => Some(RefundStatus::Closed),
            _ => None,
        }
    }

    /// No later change is possible.
    pub fn is_final(self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Closed)
    }

    /// Whether the money of a refund in this status is spoken for: every refund
    /// but a closed one counts against what is left of the order's total, so two
    /// refunds in flight can never together go over it.
    pub fn holds_money(self) -> bool {
        self != RefundStatus::Closed
    }

    /// `PROCESSING → SUCCESS | CHANGE | CLOSED`, `CHANGE → SUCCESS | CLOSED`.
    /// A final status never changes: a late or repeated message about it is a no-op.
    pub fn can_become(self, next: RefundStatus) -> bool {
        use RefundStatus::*;
        matches!(
            (self, next),
            (Processing, Success | Change | Closed) | (Change, Success | Closed)
        )
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefundStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RefundStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::new("refund_status", format!("unknown status {s:?}")))
    }
}

/// A validated refund request, about to be stored as PROCESSING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub out_refund_no: OutRefundNo,
    pub out_trade_no: OutTradeNo,
    pub refund_fee: Fee,
    pub reason: RefundReason,
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub out_refund_no: OutRefundNo,
    pub out_trade_no: OutTradeNo,
    /// WeChat's refund id, once WeChat has accepted the refund.
    pub refund_id: Option<String>,
    pub refund_fee: Fee,
    pub status: RefundStatus,
    pub reason: RefundReason,
    /// WeChat's err_code when it refused the request outright.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
}

impl Refund {
    /// Whether `new` is this refund asked for again (same order, amount and
    /// reason): then it is answered with this refund; the same number with other
    /// fields is a different request under a key already taken.
    pub fn is_same_request(&self, new: &NewRefund) -> bool {
        self.out_refund_no == new.out_refund_no
            && self.out_trade_no == new.out_trade_no
            && self.refund_fee == new.refund_fee
            && self.reason == new.reason
    }
}

#[cfg(test)]
mod tests {
    use super::RefundStatus::*;
    use super::*;

    #[test]
    fn final_statuses_never_change() {
        for next in RefundStatus::ALL {
            assert!(!Success.can_become(next), "SUCCESS -> {next}");
            assert!(!Closed.can_become(next), "CLOSED -> {next}");
            assert!(!next.can_become(Processing), "{next} -> PROCESSING");
        }
        for next in [Success, Change, Closed] {
            assert!(Processing.can_become(next));
        }
        assert!(Change.can_become(Success) && Change.can_become(Closed));
    }

    #[test]
    fn only_a_closed_refund_gives_its_money_back_to_the_order() {
        assert!(Processing.holds_money() && Success.holds_money() && Change.holds_money());
        assert!(!Closed.holds_money());
    }

    #[test]
    fn wechat_names_map_and_ours_round_trip() {
        assert_eq!(RefundStatus::from_wechat("REFUNDCLOSE"), Some(Closed));
        assert_eq!(RefundStatus::from_wechat("CLOSED"), None);
        for s in RefundStatus::ALL {
            assert_eq!(s.as_str().parse::<RefundStatus>(), Ok(s));
        }
    }
}
