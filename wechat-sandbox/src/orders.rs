//! The sandbox's order book: WeChat's side of each order, in memory, and the
//! rules for changing it (place, pay, fail, close, age). Pure: no I/O and no clock
//! of its own (callers pass `now`), so every rule is testable without a server.
//! WeChat's rules are written out here rather than borrowed from the product's
//! state machine: they differ (PAYERROR is final for the product, not for WeChat).
//! The delivery log of each order's notifications lives here too, because it is
//! part of what a test inspects about an order. Refunds, which belong to orders,
//! are in the `refunds` child module.

mod refunds;

pub use refunds::{
    NewRefund, RefundError, RefundMoveError, RefundRef, RefundStatus, SandboxRefund,
    MAX_REFUNDS_PER_ORDER,
};

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use wxpay_core::{
    domain::OrderStatus,
    wechat::{china_time, Fields, SignType},
};

/// What unifiedorder asked for, validated by `protocol`.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub out_trade_no: String,
    pub body: String,
    pub attach: String,
    pub openid: String,
    pub trade_type: String,
    pub total_fee: i64,
    pub notify_url: String,
    pub time_expire: Option<DateTime<Utc>>,
    pub sign_type: SignType,
    /// Every request field but `nonce_str` and `sign`: a repeated unifiedorder is
    /// "the same order" exactly when these are equal.
    pub business: Fields,
}

/// One order as WeChat holds it.
#[derive(Debug, Clone)]
pub struct SandboxOrder {
    pub out_trade_no: String,
    pub status: OrderStatus,
    pub prepay_id: String,
    pub body: String,
    pub attach: String,
    pub openid: String,
    pub trade_type: String,
    pub total_fee: i64,
    pub notify_url: String,
    pub sign_type: SignType,
    pub time_expire: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub time_end: Option<DateTime<Utc>>,
    pub bank_type: Option<String>,
    /// Why the payment failed (PAYERROR): WeChat's err_code and err_code_des.
    pub failure: Option<(String, String)>,
    pub deliveries: Vec<DeliveryAttempt>,
    /// The out_refund_no of each refund, in the order they were applied for.
    pub refunds: Vec<String>,
    business: Fields,
}

/// One attempt to deliver one copy of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Which concurrent copy (1-based; always 1 unless `duplicate`).
    pub copy: u32,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// When the attempt was sent (RFC 3339, UTC).
    pub at: String,
    /// The merchant's HTTP status; absent when no answer came.
    pub http_status: Option<u16>,
    /// The merchant's reply body (cut at 4 KiB).
    pub reply: Option<String>,
    /// Why no answer came (connection refused, timeout).
    pub error: Option<String>,
    /// The merchant answered return_code SUCCESS: WeChat stops retrying.
    pub acknowledged: bool,
}

/// Why unifiedorder refused to place an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceError {
    /// Same out_trade_no, other parameters: WeChat's "201 商户订单号重复".
    DuplicateOutTradeNo,
    Paid,
    Closed,
}

/// closeorder's business outcomes other than "closed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    NotFound,
    Paid,
    Closed,
    /// Created less than the minimum age ago ("订单生成后不能马上调用关单接口").
    TooYoung,
}

/// Why a control-API transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    NotFound,
    /// The order is in a status the move is not allowed from.
    Conflict(OrderStatus),
    Expired,
    TransactionIdTaken,
    /// Aging would move a time out of the calendar.
    TooOld,
}

#[derive(Debug, Default)]
pub struct OrderBook {
    orders: HashMap<String, SandboxOrder>,
    /// Keyed by out_refund_no, which is unique per merchant.
    refunds: HashMap<String, SandboxRefund>,
}

impl OrderBook {
    pub fn get(&self, out_trade_no: &str) -> Option<&SandboxOrder> {
        self.orders.get(out_trade_no)
    }

    /// Every order, in no particular order (the bill sorts what it takes).
    pub fn all_orders(&self) -> impl Iterator<Item = &SandboxOrder> {
        self.orders.values()
    }

    pub fn find_by_transaction_id(&self, transaction_id: &str) -> Option<&SandboxOrder> {
        self.orders
            .values()
            .find(|o| o.transaction_id.as_deref() == Some(transaction_id))
    }

    /// unifiedorder: a new order, or the same prepay_id for a repeat of the same one.
    pub fn place(&mut self, new: NewOrder, now: DateTime<Utc>) -> Result<String, PlaceError> {
        if let Some(existing) = self.orders.get(&new.out_trade_no) {
            return match existing.status {
                OrderStatus::Success | OrderStatus::Refund => Err(PlaceError::Paid),
                OrderStatus::Closed | OrderStatus::Revoked => Err(PlaceError::Closed),
                OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {
                    if existing.business == new.business {
                        Ok(existing.prepay_id.clone())
                    } else {
                        Err(PlaceError::DuplicateOutTradeNo)
                    }
                }
            };
        }
        let prepay_id = prepay_id(now);
        let order = SandboxOrder {
            out_trade_no: new.out_trade_no.clone(),
            status: OrderStatus::NotPay,
            prepay_id: prepay_id.clone(),
            body: new.body,
            attach: new.attach,
            openid: new.openid,
            trade_type: new.trade_type,
            total_fee: new.total_fee,
            notify_url: new.notify_url,
            sign_type: new.sign_type,
            time_expire: new.time_expire,
            created_at: now,
            transaction_id: None,
            time_end: None,
            bank_type: None,
            failure: None,
            deliveries: Vec::new(),
            refunds: Vec::new(),
            business: new.business,
        };
        self.orders.insert(new.out_trade_no, order);
        Ok(prepay_id)
    }

    /// closeorder. After it succeeds the order can never be paid. An order younger
    /// than `min_age` is refused; what the order already is (paid, closed) is
    /// answered first, because that answer does not depend on its age.
    pub fn close(
        &mut self,
        out_trade_no: &str,
        now: DateTime<Utc>,
        min_age: TimeDelta,
    ) -> Result<(), CloseError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or(CloseError::NotFound)?;
        match order.status {
            OrderStatus::Success | OrderStatus::Refund => Err(CloseError::Paid),
            OrderStatus::Closed | OrderStatus::Revoked => Err(CloseError::Closed),
            // WeChat lets a merchant close an order whose payment failed, so the
            // payer can be sent a fresh one; an expired order is closed the same way.
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {
                if now - order.created_at < min_age {
                    return Err(CloseError::TooYoung);
                }
                order.status = OrderStatus::Closed;
                Ok(())
            }
        }
    }

    /// Moves every time of the order `by` into the past, as if it had all happened
    /// that much earlier: its creation (for closeorder's minimum age), its
    /// `time_expire` (so it expires sooner), its payment time and its refunds'
    /// times (for the bill and the one-year refund limit).
    pub fn age(
        &mut self,
        out_trade_no: &str,
        by: TimeDelta,
    ) -> Result<SandboxOrder, TransitionError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or(TransitionError::NotFound)?;
        let earlier = |t: DateTime<Utc>| t.checked_sub_signed(by).ok_or(TransitionError::TooOld);
        let created_at = earlier(order.created_at)?;
        let time_expire = order.time_expire.map(earlier).transpose()?;
        let time_end = order.time_end.map(earlier).transpose()?;
        order.created_at = created_at;
        order.time_expire = time_expire;
        order.time_end = time_end;
        let aged = order.clone();
        self.age_refunds_of(out_trade_no, by);
        Ok(aged)
    }

    /// The payer paid. `transaction_id` is WeChat's (generated unless the test chose one).
    pub fn pay(
        &mut self,
        out_trade_no: &str,
        transaction_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<SandboxOrder, TransitionError> {
        if let Some(tid) = &transaction_id {
            if self.find_by_transaction_id(tid).is_some() {
                return Err(TransitionError::TransactionIdTaken);
            }
        }
        let order = self.payable(out_trade_no, OrderStatus::Success, now)?;
        order.status = OrderStatus::Success;
        order.transaction_id = Some(transaction_id.unwrap_or_else(|| new_transaction_id(now)));
        order.time_end = Some(now);
        order.bank_type = Some("OTHERS".to_owned());
        // A payer who retried after a failure: the earlier failure is history, and
        // the notification must say SUCCESS.
        order.failure = None;
        Ok(order.clone())
    }

    /// The payment failed (PAYERROR), e.g. not enough balance.
    pub fn fail(
        &mut self,
        out_trade_no: &str,
        err_code: String,
        err_code_des: String,
        now: DateTime<Utc>,
    ) -> Result<SandboxOrder, TransitionError> {
        let order = self.payable(out_trade_no, OrderStatus::PayError, now)?;
        order.status = OrderStatus::PayError;
        order.time_end = Some(now);
        order.failure = Some((err_code, err_code_des));
        Ok(order.clone())
    }

    /// The payer is entering their password (USERPAYING).
    pub fn user_paying(
        &mut self,
        out_trade_no: &str,
        now: DateTime<Utc>,
    ) -> Result<SandboxOrder, TransitionError> {
        let order = self.payable(out_trade_no, OrderStatus::UserPaying, now)?;
        order.status = OrderStatus::UserPaying;
        order.failure = None;
        Ok(order.clone())
    }

    pub fn record_delivery(&mut self, out_trade_no: &str, attempt: DeliveryAttempt) {
        if let Some(order) = self.orders.get_mut(out_trade_no) {
            order.deliveries.push(attempt);
        }
    }

    /// The order, if the payer's side may move it to `next` now (see
    /// [`payer_may_move`]); an expired order cannot be paid at all.
    fn payable(
        &mut self,
        out_trade_no: &str,
        next: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<&mut SandboxOrder, TransitionError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or(TransitionError::NotFound)?;
        if !payer_may_move(order.status, next) {
            return Err(TransitionError::Conflict(order.status));
        }
        if order.time_expire.is_some_and(|t| t <= now) {
            return Err(TransitionError::Expired);
        }
        Ok(order)
    }
}

/// What the payer's side can do to an order at WeChat. It differs from the
/// product's state machine in one place: PAYERROR is not final at WeChat. The
/// payer may try again, so a failed order can still be paid, fail again, or see
/// the payer entering a password. Paid, closed and revoked orders never move.
fn payer_may_move(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    match to {
        Success | PayError => matches!(from, NotPay | UserPaying | PayError),
        UserPaying => matches!(from, NotPay | PayError),
        NotPay | Closed | Refund | Revoked => false,
    }
}

/// `wx` + 14-digit China time + 20 random hex digits, the shape of WeChat's ids.
fn prepay_id(now: DateTime<Utc>) -> String {
    let random: u128 = rand::rng().random();
    format!(
        "wx{}{:020x}",
        china_time::format(now),
        random & ((1u128 << 80) - 1)
    )
}

/// 28 digits: `4200000` + the China date + 13 random digits, like WeChat's.
fn new_transaction_id(now: DateTime<Utc>) -> String {
    let date = &china_time::format(now)[..8];
    let random = rand::rng().random_range(0..10_000_000_000_000u64);
    format!("4200000{date}{random:013}")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn new_order(no: &str, fee: i64) -> NewOrder {
        let mut business = Fields::new();
        business.insert("out_trade_no".into(), no.into());
        business.insert("total_fee".into(), fee.to_string());
        NewOrder {
            out_trade_no: no.into(),
            body: "test".into(),
            attach: String::new(),
            openid: "o1".into(),
            trade_type: "JSAPI".into(),
            total_fee: fee,
            notify_url: "http://127.0.0.1:1/notify".into(),
            time_expire: None,
            sign_type: SignType::Md5,
            business,
        }
    }

    #[test]
    fn ids_have_wechats_shape() {
        let now = Utc::now();
        let prepay = prepay_id(now);
        assert_eq!(prepay.len(), 36);
        assert!(prepay.starts_with("wx"));
        let tid = new_transaction_id(now);
        assert_eq!(tid.len(), 28);
        assert!(tid.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn repeating_an_order_returns_its_prepay_id_and_changing_it_is_refused() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let first = book.place(new_order("A1", 100), now).expect("placed");
        assert_eq!(book.place(new_order("A1", 100), now), Ok(first));
        assert_eq!(
            book.place(new_order("A1", 101), now),
            Err(PlaceError::DuplicateOutTradeNo)
        );
    }

    #[test]
    fn a_closed_order_can_never_be_paid() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("A2", 100), now).expect("placed");
        assert_eq!(book.close("A2", now, TimeDelta::zero()), Ok(()));
        assert_eq!(
            book.pay("A2", None, now).map(|o| o.status),
            Err(TransitionError::Conflict(OrderStatus::Closed))
        );
        assert_eq!(
            book.close("A2", now, TimeDelta::zero()),
            Err(CloseError::Closed)
        );
        assert_eq!(
            book.place(new_order("A2", 100), now),
            Err(PlaceError::Closed)
        );
    }

    #[test]
    fn a_paid_order_cannot_be_closed_paid_again_or_replaced() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("A3", 100), now).expect("placed");
        let paid = book.pay("A3", None, now).expect("paid");
        assert!(paid.transaction_id.is_some());
        assert_eq!(
            book.close("A3", now, TimeDelta::minutes(5)),
            Err(CloseError::Paid)
        );
        assert!(matches!(
            book.pay("A3", None, now),
            Err(TransitionError::Conflict(OrderStatus::Success))
        ));
        assert_eq!(book.place(new_order("A3", 100), now), Err(PlaceError::Paid));
    }

    #[test]
    fn an_expired_order_cannot_be_paid() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let mut order = new_order("A4", 100);
        order.time_expire = Some(now + chrono::Duration::seconds(60));
        book.place(order, now).expect("placed");
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(
            book.pay("A4", None, later).map(|o| o.status),
            Err(TransitionError::Expired)
        );
    }

    #[test]
    fn an_order_younger_than_the_minimum_age_cannot_be_closed_until_it_ages() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let five = TimeDelta::minutes(5);
        book.place(new_order("A7", 100), now).expect("placed");
        let later = now + TimeDelta::seconds(299);
        assert_eq!(book.close("A7", later, five), Err(CloseError::TooYoung));
        book.age("A7", TimeDelta::seconds(1)).expect("aged");
        assert_eq!(book.close("A7", later, five), Ok(()));
    }

    #[test]
    fn a_failed_payment_can_be_retried_and_then_succeeds() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("A8", 100), now).expect("placed");
        book.fail("A8", "NOTENOUGH".into(), "余额不足".into(), now)
            .expect("failed");
        let again = book
            .fail("A8", "NOTENOUGH".into(), "余额不足".into(), now)
            .expect("failed again");
        assert_eq!(again.status, OrderStatus::PayError);
        let paid = book.pay("A8", None, now).expect("the retry pays");
        assert_eq!(paid.status, OrderStatus::Success);
        assert_eq!(paid.failure, None);
        assert!(matches!(
            book.fail("A8", "NOTENOUGH".into(), "余额不足".into(), now),
            Err(TransitionError::Conflict(OrderStatus::Success))
        ));
    }

    #[test]
    fn aging_moves_creation_expiry_and_payment_into_the_past() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let mut order = new_order("A9", 100);
        order.time_expire = Some(now + TimeDelta::minutes(10));
        book.place(order, now).expect("placed");
        let aged = book.age("A9", TimeDelta::minutes(11)).expect("aged");
        assert_eq!(aged.created_at, now - TimeDelta::minutes(11));
        assert_eq!(aged.time_expire, Some(now - TimeDelta::minutes(1)));
        assert_eq!(
            book.pay("A9", None, now).map(|o| o.status),
            Err(TransitionError::Expired)
        );
        assert_eq!(
            book.age("nope", TimeDelta::seconds(1)).map(|o| o.status),
            Err(TransitionError::NotFound)
        );
    }

    #[test]
    fn a_transaction_id_is_used_once() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("A5", 100), now).expect("placed");
        book.place(new_order("A6", 100), now).expect("placed");
        book.pay("A5", Some("T1".into()), now).expect("paid");
        assert_eq!(
            book.pay("A6", Some("T1".into()), now).map(|o| o.status),
            Err(TransitionError::TransactionIdTaken)
        );
        assert_eq!(
            book.find_by_transaction_id("T1")
                .map(|o| o.out_trade_no.as_str()),
            Some("A5")
        );
    }
}
