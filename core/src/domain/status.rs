//! Order status and the state machine from DESIGN.md. The only question it
//! answers is "may an order in status A become status B?"; storage enforces the
//! answer with one conditional UPDATE.

use std::{fmt, str::FromStr};

use super::ValidationError;

/// The statuses WeChat's `trade_state` can take, which are also ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    NotPay,
    UserPaying,
    Success,
    Closed,
    PayError,
    Refund,
    Revoked,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::NotPay,
        OrderStatus::UserPaying,
        OrderStatus::Success,
        OrderStatus::Closed,
        OrderStatus::PayError,
        OrderStatus::Refund,
        OrderStatus::Revoked,
    ];

    /// WeChat's spelling, also used in the database and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::NotPay => "NOTPAY",
            OrderStatus::UserPaying => "USERPAYING",
            OrderStatus::Success => "SUCCESS",
            OrderStatus::Closed => "CLOSED",
            OrderStatus::PayError => "PAYERROR",
            OrderStatus::Refund => "REFUND",
            OrderStatus::Revoked => "REVOKED",
        }
    }

    /// The statuses an order may be in for a move to `self` to be allowed.
    ///
    /// WeChat's word on money wins: a verified payment moves every unsettled
    /// order (NOTPAY, USERPAYING, PAYERROR) and even a closed or revoked one to
    /// SUCCESS; the caller records the latter as an anomaly (paid after close),
    /// since the merchant may want to refund it. PAYERROR is not final at WeChat
    /// (the payer may try again) and an unsettled order closes when WeChat closes
    /// it. SUCCESS only ever becomes REFUND.
    ///
    /// `NOTPAY → USERPAYING | SUCCESS | PAYERROR | CLOSED | REVOKED`,
    /// `USERPAYING → SUCCESS | PAYERROR | CLOSED | REVOKED`,
    /// `PAYERROR → SUCCESS | CLOSED`, `CLOSED | REVOKED → SUCCESS`, `SUCCESS → REFUND`.
    pub fn allowed_from(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            NotPay => &[],
            UserPaying => &[NotPay],
            Success => &[NotPay, UserPaying, PayError, Closed, Revoked],
            PayError | Revoked => &[NotPay, UserPaying],
            Closed => &[NotPay, UserPaying, PayError],
            Refund => &[Success],
        }
    }

    /// Settled as far as the payer is concerned: no longer waiting for a payment.
    /// PAYERROR is not settled (the payer may try again).
    pub fn is_unsettled(self) -> bool {
        matches!(
            self,
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError
        )
    }

    pub fn can_become(self, next: OrderStatus) -> bool {
        next.allowed_from().contains(&self)
    }

    /// A status after which a payment stream ends: nothing but a refund follows.
    pub fn is_terminal(self) -> bool {
        !matches!(self, OrderStatus::NotPay | OrderStatus::UserPaying)
    }

    /// Still waiting for the payer.
    pub fn is_pending(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::new("trade_state", format!("unknown status {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn unpaid_orders_can_be_paid_closed_or_failed() {
        for next in [Success, Closed, PayError, UserPaying, Revoked] {
            assert!(NotPay.can_become(next), "NOTPAY -> {next}");
        }
        for next in [Success, Closed, PayError] {
            assert!(UserPaying.can_become(next), "USERPAYING -> {next}");
        }
    }

    #[test]
    fn paid_orders_can_only_be_refunded() {
        assert!(Success.can_become(Refund));
        for next in [NotPay, UserPaying, Closed, PayError, Revoked, Success] {
            assert!(!Success.can_become(next), "SUCCESS -> {next}");
        }
    }

    #[test]
    fn a_verified_payment_wins_over_every_unpaid_state() {
        for from in [NotPay, UserPaying, PayError, Closed, Revoked] {
            assert!(from.can_become(Success), "{from} -> SUCCESS");
        }
        assert!(
            PayError.can_become(Closed),
            "an expired failed order closes"
        );
    }

    #[test]
    fn closed_revoked_and_refunded_orders_move_only_to_a_payment() {
        for from in [Closed, Revoked] {
            for next in OrderStatus::ALL {
                assert_eq!(from.can_become(next), next == Success, "{from} -> {next}");
            }
        }
        for next in OrderStatus::ALL {
            assert!(!Refund.can_become(next), "REFUND -> {next}");
        }
        for from in OrderStatus::ALL {
            assert!(!from.can_become(NotPay));
        }
        assert!(!NotPay.can_become(Refund));
        assert!(!PayError.can_become(UserPaying));
    }

    #[test]
    fn names_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
        }
        assert!("PAID".parse::<OrderStatus>().is_err());
    }
}
