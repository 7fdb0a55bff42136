//! Refunds in the order book: WeChat's rules for accepting one (the order must be
//! paid, amounts must add up, the same out_refund_no is the same refund), for
//! settling it (PROCESSING → SUCCESS | CHANGE | REFUNDCLOSE, done by the control
//! API in place of WeChat's bank side), and for finding refunds again
//! (refundquery, v3's refund query). One model for both dialects: a refund
//! remembers the one it was asked for in only to notify in it. Pure like the
//! rest of the book: callers pass `now`.

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use wxpay_core::{
    domain::OrderStatus,
    wechat::{china_time, ApiVersion, SignType},
};

use super::{DeliveryAttempt, OrderBook, Owner, SandboxOrder};
use crate::protocol::OrderRef;

/// The most refunds one order may have ("每个支付订单的部分退款次数不能超过50次").
pub const MAX_REFUNDS_PER_ORDER: usize = 50;

/// An order paid longer ago than this can no longer be refunded (TRADE_OVERDUE).
const REFUND_WINDOW_DAYS: i64 = 365;

/// Where a refund stands. Only PROCESSING moves, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RefundStatus {
    Processing,
    Success,
    /// The money could not go back to the payer's account: manual handling.
    /// v3 calls it ABNORMAL, which the control API also accepts.
    #[serde(alias = "ABNORMAL")]
    Change,
    /// The refund was closed; its amount is free to be refunded again. v3
    /// calls it CLOSED, which the control API also accepts.
    #[serde(alias = "CLOSED")]
    RefundClose,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Change => "CHANGE",
            RefundStatus::RefundClose => "REFUNDCLOSE",
        }
    }

    /// The state as API v3 spells it (`status` of an answer, `refund_status`
    /// of a notification): CHANGE is ABNORMAL, REFUNDCLOSE is CLOSED.
    pub fn v3_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Change => "ABNORMAL",
            RefundStatus::RefundClose => "CLOSED",
        }
    }

    /// Whether the refund's amount counts against what is left to refund.
    fn holds_money(self) -> bool {
        match self {
            RefundStatus::Processing | RefundStatus::Success | RefundStatus::Change => true,
            RefundStatus::RefundClose => false,
        }
    }
}

/// What a refund request asked for, validated by `protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub order: OrderRef,
    pub out_refund_no: String,
    pub total_fee: i64,
    pub refund_fee: i64,
    pub refund_desc: String,
    /// `REFUND_SOURCE_UNSETTLED_FUNDS` unless the request chose the balance.
    pub refund_account: String,
    /// Only a refund that named a notify_url is ever notified.
    pub notify_url: Option<String>,
    pub sign_type: SignType,
    /// The dialect the refund was asked for in, which its notification speaks.
    pub api_version: ApiVersion,
}

/// One refund as WeChat holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub total_fee: i64,
    pub refund_fee: i64,
    pub refund_desc: String,
    pub refund_account: String,
    pub notify_url: Option<String>,
    pub sign_type: SignType,
    /// v2 or v3: the dialect it was asked for in (a repeat in the other one
    /// is still the same refund); its notification is sent in it.
    pub api_version: ApiVersion,
    pub status: RefundStatus,
    /// When the refund was applied for (退款申请时间).
    pub created_at: DateTime<Utc>,
    /// When it succeeded (SUCCESS only).
    pub success_time: Option<DateTime<Utc>>,
    pub deliveries: Vec<DeliveryAttempt>,
}

/// Why a refund request was refused. Each maps to one WeChat err_code in `wechat_api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundError {
    /// No order with this out_trade_no.
    OrderNotFound,
    /// No payment with this transaction_id.
    TransactionNotFound,
    /// The order is not paid (or was closed).
    NotPaid,
    /// Paid more than a year ago.
    Overdue,
    /// total_fee is not the order's amount.
    TotalFeeMismatch,
    TooManyRefunds,
    FullyRefunded,
    /// The refunds would add up to more than was paid.
    ExceedsPaid,
    /// The out_refund_no exists with another total_fee or refund_fee.
    AmountsDiffer,
    /// The out_refund_no exists for another order or with other options.
    OutRefundNoReused,
}

/// Why a control-API move of a refund was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundMoveError {
    NotFound,
    /// Only a PROCESSING refund can be settled.
    AlreadySettled(RefundStatus),
    /// Aging would put the refund before the payment it refunds.
    BeforePayment,
}

/// Which refunds refundquery asks about, in WeChat's priority order
/// (refund_id > out_refund_no > transaction_id > out_trade_no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRef {
    RefundId(String),
    OutRefundNo(String),
    Order(OrderRef),
}

impl OrderBook {
    pub fn get_refund(&self, out_refund_no: &str) -> Option<&SandboxRefund> {
        self.refunds.get(out_refund_no)
    }

    /// Every refund, in no particular order (the bill sorts what it takes).
    pub fn all_refunds(&self) -> impl Iterator<Item = &SandboxRefund> {
        self.refunds.values()
    }

    /// The refund API: accepts a refund (PROCESSING), or returns the one already
    /// accepted under this out_refund_no when the request is the same again.
    pub fn apply_refund(
        &mut self,
        owner: &Owner,
        new: NewRefund,
        now: DateTime<Utc>,
    ) -> Result<SandboxRefund, RefundError> {
        let order = self.find(owner, &new.order).ok_or(match new.order {
            OrderRef::OutTradeNo(_) => RefundError::OrderNotFound,
            OrderRef::TransactionId(_) => RefundError::TransactionNotFound,
        })?;
        // A retry first: it must get the refund it asked for even if the order has
        // since been refunded in full by it.
        if let Some(existing) = self.refunds.get(&new.out_refund_no) {
            return same_refund(existing, order, &new).map(|()| existing.clone());
        }
        if !matches!(order.status, OrderStatus::Success | OrderStatus::Refund) {
            return Err(RefundError::NotPaid);
        }
        if order
            .time_end
            .is_some_and(|paid| now - paid > TimeDelta::days(REFUND_WINDOW_DAYS))
        {
            return Err(RefundError::Overdue);
        }
        if new.total_fee != order.total_fee {
            return Err(RefundError::TotalFeeMismatch);
        }
        if order.refunds.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(RefundError::TooManyRefunds);
        }
        let refunded = self.refunded(order);
        if refunded >= order.total_fee {
            return Err(RefundError::FullyRefunded);
        }
        if refunded + new.refund_fee > order.total_fee {
            return Err(RefundError::ExceedsPaid);
        }
        let refund = SandboxRefund {
            out_refund_no: new.out_refund_no.clone(),
            refund_id: new_refund_id(now),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            total_fee: order.total_fee,
            refund_fee: new.refund_fee,
            refund_desc: new.refund_desc,
            refund_account: new.refund_account,
            notify_url: new.notify_url,
            sign_type: new.sign_type,
            api_version: new.api_version,
            status: RefundStatus::Processing,
            created_at: now,
            success_time: None,
            deliveries: Vec::new(),
        };
        let out_trade_no = order.out_trade_no.clone();
        if let Some(order) = self.orders.get_mut(&out_trade_no) {
            order.status = OrderStatus::Refund;
            order.refunds.push(refund.out_refund_no.clone());
        }
        self.refunds
            .insert(refund.out_refund_no.clone(), refund.clone());
        Ok(refund)
    }

    /// What refundquery lists: the order and its refunds (one, when asked by
    /// refund), or `None` when nothing matches (REFUNDNOTEXIST), also when
    /// the refund is of another owner's order.
    pub fn query_refunds(
        &self,
        owner: &Owner,
        reference: &RefundRef,
    ) -> Option<(&SandboxOrder, Vec<&SandboxRefund>)> {
        let found = match reference {
            RefundRef::OutRefundNo(no) => self.with_order(self.refunds.get(no)?),
            RefundRef::RefundId(id) => {
                self.with_order(self.refunds.values().find(|r| &r.refund_id == id)?)
            }
            RefundRef::Order(order_ref) => {
                let order = self.find(owner, order_ref)?;
                let refunds: Vec<_> = order
                    .refunds
                    .iter()
                    .filter_map(|no| self.refunds.get(no))
                    .collect();
                (!refunds.is_empty()).then_some((order, refunds))
            }
        }?;
        (&found.0.owner == owner).then_some(found)
    }

    /// WeChat's bank side finishes a refund. Only PROCESSING refunds move.
    pub fn settle_refund(
        &mut self,
        out_refund_no: &str,
        status: RefundStatus,
        now: DateTime<Utc>,
    ) -> Result<SandboxRefund, RefundMoveError> {
        let refund = self
            .refunds
            .get_mut(out_refund_no)
            .ok_or(RefundMoveError::NotFound)?;
        if refund.status != RefundStatus::Processing {
            return Err(RefundMoveError::AlreadySettled(refund.status));
        }
        refund.status = status;
        refund.success_time = (status == RefundStatus::Success).then_some(now);
        Ok(refund.clone())
    }

    /// Moves the refund's times `by` into the past, but never before the payment.
    pub fn age_refund(
        &mut self,
        out_refund_no: &str,
        by: TimeDelta,
    ) -> Result<SandboxRefund, RefundMoveError> {
        let refund = self
            .refunds
            .get_mut(out_refund_no)
            .ok_or(RefundMoveError::NotFound)?;
        let paid = self
            .orders
            .get(&refund.out_trade_no)
            .and_then(|o| o.time_end);
        let created_at = refund
            .created_at
            .checked_sub_signed(by)
            .ok_or(RefundMoveError::BeforePayment)?;
        if paid.is_some_and(|paid| created_at < paid) {
            return Err(RefundMoveError::BeforePayment);
        }
        refund.created_at = created_at;
        refund.success_time = refund.success_time.and_then(|t| t.checked_sub_signed(by));
        Ok(refund.clone())
    }

    pub fn record_refund_delivery(&mut self, out_refund_no: &str, attempt: DeliveryAttempt) {
        if let Some(refund) = self.refunds.get_mut(out_refund_no) {
            refund.deliveries.push(attempt);
        }
    }

    /// Part of the order's aging: its refunds happened that much earlier too.
    pub(super) fn age_refunds_of(&mut self, out_trade_no: &str, by: TimeDelta) {
        for refund in self
            .refunds
            .values_mut()
            .filter(|r| r.out_trade_no == out_trade_no)
        {
            // The order's own times were checked first, and refunds come after
            // them, so these cannot leave the calendar.
            if let Some(t) = refund.created_at.checked_sub_signed(by) {
                refund.created_at = t;
            }
            refund.success_time = refund.success_time.and_then(|t| t.checked_sub_signed(by));
        }
    }

    fn with_order<'a>(
        &'a self,
        refund: &'a SandboxRefund,
    ) -> Option<(&'a SandboxOrder, Vec<&'a SandboxRefund>)> {
        Some((self.get(&refund.out_trade_no)?, vec![refund]))
    }

    /// The order's refunded amount: every refund that still holds money.
    fn refunded(&self, order: &SandboxOrder) -> i64 {
        order
            .refunds
            .iter()
            .filter_map(|no| self.refunds.get(no))
            .filter(|r| r.status.holds_money())
            .map(|r| r.refund_fee)
            .sum()
    }
}

/// Whether a repeated out_refund_no asks for the very refund it names.
fn same_refund(
    existing: &SandboxRefund,
    order: &SandboxOrder,
    new: &NewRefund,
) -> Result<(), RefundError> {
    if existing.out_trade_no != order.out_trade_no {
        return Err(RefundError::OutRefundNoReused);
    }
    if existing.total_fee != new.total_fee || existing.refund_fee != new.refund_fee {
        return Err(RefundError::AmountsDiffer);
    }
    let same_options = existing.refund_desc == new.refund_desc
        && existing.refund_account == new.refund_account
        && existing.notify_url == new.notify_url;
    if same_options {
        Ok(())
    } else {
        Err(RefundError::OutRefundNoReused)
    }
}

/// 29 digits like WeChat's refund ids: `503` + the China date + 18 random digits.
fn new_refund_id(now: DateTime<Utc>) -> String {
    let date = &china_time::format(now)[..8];
    let random = rand::rng().random_range(0..1_000_000_000_000_000_000u64);
    format!("503{date}{random:018}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::{
        tests::{new_order, owner},
        Payer,
    };

    fn paid_book(no: &str, fee: i64, now: DateTime<Utc>) -> OrderBook {
        let mut book = OrderBook::default();
        book.place(new_order(no, fee), now).expect("placed");
        book.pay(no, Some(format!("T{no}")), Payer::default(), now)
            .expect("paid");
        book
    }

    fn refund(no: &str, out_refund_no: &str, total: i64, fee: i64) -> NewRefund {
        NewRefund {
            order: OrderRef::OutTradeNo(no.into()),
            out_refund_no: out_refund_no.into(),
            total_fee: total,
            refund_fee: fee,
            refund_desc: String::new(),
            refund_account: "REFUND_SOURCE_UNSETTLED_FUNDS".into(),
            notify_url: None,
            sign_type: SignType::Md5,
            api_version: ApiVersion::V2,
        }
    }

    #[test]
    fn refund_ids_have_wechats_shape() {
        let id = new_refund_id(Utc::now());
        assert_eq!(id.len(), 29);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn partial_refunds_add_up_to_the_amount_paid_and_no_further() {
        let now = Utc::now();
        let mut book = paid_book("R1", 100, now);
        let first = book
            .apply_refund(&owner(), refund("R1", "a", 100, 60), now)
            .expect("60");
        assert_eq!(first.status, RefundStatus::Processing);
        assert_eq!(book.get("R1").map(|o| o.status), Some(OrderStatus::Refund));
        assert_eq!(
            book.apply_refund(&owner(), refund("R1", "b", 100, 41), now),
            Err(RefundError::ExceedsPaid)
        );
        book.apply_refund(&owner(), refund("R1", "c", 100, 40), now)
            .expect("40");
        assert_eq!(
            book.apply_refund(&owner(), refund("R1", "d", 100, 1), now),
            Err(RefundError::FullyRefunded)
        );
        // A closed refund gives its amount back.
        book.settle_refund("c", RefundStatus::RefundClose, now)
            .expect("closed");
        book.apply_refund(&owner(), refund("R1", "e", 100, 40), now)
            .expect("40 again");
    }

    #[test]
    fn the_same_out_refund_no_is_the_same_refund_and_other_amounts_are_refused() {
        let now = Utc::now();
        let mut book = paid_book("R2", 100, now);
        let first = book
            .apply_refund(&owner(), refund("R2", "a", 100, 100), now)
            .expect("all");
        let again = book.apply_refund(&owner(), refund("R2", "a", 100, 100), now);
        assert_eq!(again.as_ref().map(|r| &r.refund_id), Ok(&first.refund_id));
        assert_eq!(
            book.apply_refund(&owner(), refund("R2", "a", 100, 99), now),
            Err(RefundError::AmountsDiffer)
        );
        let mut described = refund("R2", "a", 100, 100);
        described.refund_desc = "other".into();
        assert_eq!(
            book.apply_refund(&owner(), described, now),
            Err(RefundError::OutRefundNoReused)
        );
        assert_eq!(book.all_refunds().count(), 1);
    }

    #[test]
    fn only_paid_orders_within_a_year_for_their_amount_can_be_refunded() {
        let now = Utc::now();
        let mut book = paid_book("R3", 100, now);
        book.place(new_order("R4", 100), now).expect("placed");
        assert_eq!(
            book.apply_refund(&owner(), refund("R4", "a", 100, 1), now),
            Err(RefundError::NotPaid)
        );
        assert_eq!(
            book.apply_refund(&owner(), refund("R5", "a", 100, 1), now),
            Err(RefundError::OrderNotFound)
        );
        let mut by_tid = refund("R3", "a", 100, 1);
        by_tid.order = OrderRef::TransactionId("nope".into());
        assert_eq!(
            book.apply_refund(&owner(), by_tid, now),
            Err(RefundError::TransactionNotFound)
        );
        assert_eq!(
            book.apply_refund(&owner(), refund("R3", "a", 99, 1), now),
            Err(RefundError::TotalFeeMismatch)
        );
        let next_year = now + TimeDelta::days(366);
        assert_eq!(
            book.apply_refund(&owner(), refund("R3", "a", 100, 1), next_year),
            Err(RefundError::Overdue)
        );
    }

    #[test]
    fn an_order_takes_at_most_fifty_refunds() {
        let now = Utc::now();
        let mut book = paid_book("R6", 1000, now);
        for n in 0..MAX_REFUNDS_PER_ORDER {
            book.apply_refund(&owner(), refund("R6", &format!("r{n}"), 1000, 1), now)
                .expect("one fen");
        }
        assert_eq!(
            book.apply_refund(&owner(), refund("R6", "r50", 1000, 1), now),
            Err(RefundError::TooManyRefunds)
        );
    }

    #[test]
    fn a_refund_settles_once_and_success_has_a_time() {
        let now = Utc::now();
        let mut book = paid_book("R7", 100, now);
        book.apply_refund(&owner(), refund("R7", "a", 100, 10), now)
            .expect("accepted");
        let later = now + TimeDelta::seconds(5);
        let done = book
            .settle_refund("a", RefundStatus::Success, later)
            .expect("settled");
        assert_eq!(done.success_time, Some(later));
        assert_eq!(
            book.settle_refund("a", RefundStatus::Change, later),
            Err(RefundMoveError::AlreadySettled(RefundStatus::Success))
        );
        assert_eq!(
            book.settle_refund("zz", RefundStatus::Success, later),
            Err(RefundMoveError::NotFound)
        );
    }

    #[test]
    fn refunds_are_found_by_any_of_their_four_names() {
        let now = Utc::now();
        let mut book = paid_book("R8", 100, now);
        let a = book
            .apply_refund(&owner(), refund("R8", "a", 100, 10), now)
            .expect("a");
        book.apply_refund(&owner(), refund("R8", "b", 100, 20), now)
            .expect("b");
        let names = |r: &RefundRef| {
            book.query_refunds(&owner(), r).map(|(o, rs)| {
                (
                    o.out_trade_no.clone(),
                    rs.iter()
                        .map(|r| r.out_refund_no.clone())
                        .collect::<Vec<_>>(),
                )
            })
        };
        let both = Some(("R8".to_owned(), vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(
            names(&RefundRef::Order(OrderRef::OutTradeNo("R8".into()))),
            both
        );
        assert_eq!(
            names(&RefundRef::Order(OrderRef::TransactionId("TR8".into()))),
            both
        );
        let just_a = Some(("R8".to_owned(), vec!["a".to_owned()]));
        assert_eq!(names(&RefundRef::OutRefundNo("a".into())), just_a);
        assert_eq!(names(&RefundRef::RefundId(a.refund_id)), just_a);
        assert_eq!(names(&RefundRef::OutRefundNo("zz".into())), None);
    }

    #[test]
    fn a_refund_cannot_be_aged_to_before_its_payment() {
        let now = Utc::now();
        let mut book = paid_book("R9", 100, now);
        let later = now + TimeDelta::hours(2);
        book.apply_refund(&owner(), refund("R9", "a", 100, 10), later)
            .expect("a");
        let aged = book.age_refund("a", TimeDelta::hours(1)).expect("an hour");
        assert_eq!(aged.created_at, now + TimeDelta::hours(1));
        assert_eq!(
            book.age_refund("a", TimeDelta::hours(2)),
            Err(RefundMoveError::BeforePayment)
        );
        book.age("R9", TimeDelta::days(1)).expect("order aged");
        assert_eq!(
            book.get_refund("a").map(|r| r.created_at),
            Some(now + TimeDelta::hours(1) - TimeDelta::days(1))
        );
    }
}
