//! The daily reconciliation's result: what WeChat's bill of one day and the
//! local orders and refunds agreed on, what was repaired, and each difference
//! left for a person (a [`Discrepancy`] of a closed list of kinds, so a
//! dashboard can count each). Stored as JSON so a day is reconciled once.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Why a bill row and the local state disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// WeChat has a payment for an order this service does not know.
    MissingLocally,
    /// An order paid here that WeChat's bill does not list.
    MissingAtWechat,
    /// The bill's amount is not the order's.
    AmountMismatch,
    /// WeChat has it paid, and orderquery could not bring the order here in line.
    StatusMismatch,
    /// A refund in the bill that is not recorded here (and refundquery could not add).
    RefundMissingLocally,
    /// A refund that succeeded here and is not in the bill.
    RefundMissingAtWechat,
    /// The bill's refund amount is not the recorded one.
    RefundAmountMismatch,
    /// The bill has the refund done and it is not SUCCESS here (after refundquery).
    RefundStatusMismatch,
    /// The bill's own summary does not add up to its rows.
    SummaryMismatch,
}

impl DiscrepancyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::MissingLocally => "missing_locally",
            DiscrepancyKind::MissingAtWechat => "missing_at_wechat",
            DiscrepancyKind::AmountMismatch => "amount_mismatch",
            DiscrepancyKind::StatusMismatch => "status_mismatch",
            DiscrepancyKind::RefundMissingLocally => "refund_missing_locally",
            DiscrepancyKind::RefundMissingAtWechat => "refund_missing_at_wechat",
            DiscrepancyKind::RefundAmountMismatch => "refund_amount_mismatch",
            DiscrepancyKind::RefundStatusMismatch => "refund_status_mismatch",
            DiscrepancyKind::SummaryMismatch => "summary_mismatch",
        }
    }
}

/// One difference between the bill and the local state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    pub out_trade_no: String,
    /// Empty for a payment.
    pub out_refund_no: String,
    pub kind: DiscrepancyKind,
    pub detail: String,
}

/// One day's reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillReport {
    /// The bill's day, Beijing time.
    pub bill_date: NaiveDate,
    pub wechat_rows: u64,
    pub matched: u64,
    pub repaired: u64,
    pub discrepancies: Vec<Discrepancy>,
    pub reconciled_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stored_under_their_names() {
        let json = serde_json::to_string(&DiscrepancyKind::RefundAmountMismatch).expect("json");
        assert_eq!(json, "\"refund_amount_mismatch\"");
        assert_eq!(
            DiscrepancyKind::RefundAmountMismatch.as_str(),
            "refund_amount_mismatch"
        );
    }
}
