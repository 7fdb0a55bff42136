//! The sandbox's order book: WeChat's side of each order, in memory, and the
//! rules for changing it (place, pay, fail, close, age). Every order belongs to
//! an [`Owner`] (mch_id + sub_mch_id): WeChat's API finds an order only for
//! its owner, while the control API (a test's hand) finds any. Pure: no I/O and no clock
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
use rand::{distr::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use wxpay_core::{
    domain::OrderStatus,
    wechat::{china_time, ApiVersion, Fields, SignType},
};

pub use crate::accounts::Owner;
use crate::protocol::OrderRef;

/// What unifiedorder asked for, validated by `protocol`.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub owner: Owner,
    pub app_id: String,
    pub sub_app_id: Option<String>,
    /// The payer under sub_appid (service-provider JSAPI), when given.
    pub sub_openid: String,
    /// NATIVE's product (empty for other trade types unless sent).
    pub product_id: String,
    pub out_trade_no: String,
    pub body: String,
    pub attach: String,
    pub openid: String,
    pub trade_type: String,
    pub total_fee: i64,
    pub notify_url: String,
    pub time_expire: Option<DateTime<Utc>>,
    pub sign_type: SignType,
    /// The dialect it was placed in, which its notifications speak.
    pub api_version: ApiVersion,
    /// What identifies the request (v2: every field but `nonce_str` and
    /// `sign`; v3: the body): a repeat is "the same order" exactly when these
    /// are equal.
    pub business: Fields,
}

/// One order as WeChat holds it.
#[derive(Debug, Clone)]
pub struct SandboxOrder {
    /// The account (and sub merchant) it was placed for.
    pub owner: Owner,
    /// The appid the order was placed under (the provider's in service-provider mode).
    pub app_id: String,
    pub sub_app_id: Option<String>,
    pub sub_openid: String,
    pub product_id: String,
    /// NATIVE: the QR code's content.
    pub code_url: Option<String>,
    /// MWEB: the page that opens WeChat to pay.
    pub mweb_url: Option<String>,
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
    /// v2 or v3: the dialect it was placed in. Its payment notification is
    /// sent in it (a merchant moving to v3 still gets v2 ones for the orders
    /// it placed over v2); either dialect may query it.
    pub api_version: ApiVersion,
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
    /// The merchant acknowledged it (v2: return_code SUCCESS on a 2xx; v3:
    /// any 2xx): WeChat stops retrying.
    pub acknowledged: bool,
}

/// What unifiedorder hands back: the prepay_id and, by trade type, the QR
/// code (NATIVE) or H5 page (MWEB). A repeated request gets the same again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub prepay_id: String,
    pub code_url: Option<String>,
    pub mweb_url: Option<String>,
}

/// Why unifiedorder refused to place an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceError {
    /// Same out_trade_no, other parameters: WeChat's "201 商户订单号重复".
    DuplicateOutTradeNo,
    /// The out_trade_no belongs to another merchant's order. WeChat scopes
    /// out_trade_no per merchant; the sandbox keeps it unique across all of
    /// them so that the control API can name an order by it alone.
    UsedByAnotherMerchant,
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
    /// The order was placed for another payer than the one given.
    OtherPayer,
    /// A sub_openid for an order placed without a sub_appid.
    NoSubAppId,
}

/// Who pays, as the control API says (a scan of a NATIVE code, an APP or H5
/// payer); what it leaves out is the order's own payer or a fresh openid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payer {
    pub openid: Option<String>,
    pub sub_openid: Option<String>,
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

    /// The order, if `owner`'s: what WeChat's API finds for a request.
    pub fn get_owned(&self, owner: &Owner, out_trade_no: &str) -> Option<&SandboxOrder> {
        self.get(out_trade_no).filter(|o| &o.owner == owner)
    }

    /// The order a request names, by transaction_id or out_trade_no, if `owner`'s.
    pub fn find(&self, owner: &Owner, reference: &OrderRef) -> Option<&SandboxOrder> {
        let found = match reference {
            OrderRef::OutTradeNo(no) => self.get(no),
            OrderRef::TransactionId(tid) => self.find_by_transaction_id(tid),
        };
        found.filter(|o| &o.owner == owner)
    }

    /// unifiedorder: a new order, or the same prepay_id for a repeat of the same one.
    pub fn place(&mut self, new: NewOrder, now: DateTime<Utc>) -> Result<Placed, PlaceError> {
        if let Some(existing) = self.orders.get(&new.out_trade_no) {
            if existing.owner != new.owner {
                return Err(PlaceError::UsedByAnotherMerchant);
            }
            return match existing.status {
                OrderStatus::Success | OrderStatus::Refund => Err(PlaceError::Paid),
                OrderStatus::Closed | OrderStatus::Revoked => Err(PlaceError::Closed),
                OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {
                    if existing.business == new.business {
                        Ok(existing.placed())
                    } else {
                        Err(PlaceError::DuplicateOutTradeNo)
                    }
                }
            };
        }
        let prepay_id = prepay_id(now);
        let code_url = (new.trade_type == "NATIVE").then(code_url);
        let mweb_url = (new.trade_type == "MWEB").then(|| mweb_url(&prepay_id));
        let order = SandboxOrder {
            owner: new.owner,
            app_id: new.app_id,
            sub_app_id: new.sub_app_id,
            sub_openid: new.sub_openid,
            product_id: new.product_id,
            code_url,
            mweb_url,
            out_trade_no: new.out_trade_no.clone(),
            status: OrderStatus::NotPay,
            prepay_id,
            body: new.body,
            attach: new.attach,
            openid: new.openid,
            trade_type: new.trade_type,
            total_fee: new.total_fee,
            notify_url: new.notify_url,
            sign_type: new.sign_type,
            api_version: new.api_version,
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
        let placed = order.placed();
        self.orders.insert(new.out_trade_no, order);
        Ok(placed)
    }

    /// closeorder. After it succeeds the order can never be paid. An order younger
    /// than `min_age` is refused; what the order already is (paid, closed) is
    /// answered first, because that answer does not depend on its age.
    pub fn close(
        &mut self,
        owner: &Owner,
        out_trade_no: &str,
        now: DateTime<Utc>,
        min_age: TimeDelta,
    ) -> Result<(), CloseError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .filter(|o| &o.owner == owner)
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
        payer: Payer,
        now: DateTime<Utc>,
    ) -> Result<SandboxOrder, TransitionError> {
        if let Some(tid) = &transaction_id {
            if self.find_by_transaction_id(tid).is_some() {
                return Err(TransitionError::TransactionIdTaken);
            }
        }
        let order = self.payable(out_trade_no, OrderStatus::Success, now)?;
        order.take_payer(payer)?;
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
        // A failed payment had a payer too (who lacked the balance).
        order.take_payer(Payer::default())?;
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

impl SandboxOrder {
    fn placed(&self) -> Placed {
        Placed {
            prepay_id: self.prepay_id.clone(),
            code_url: self.code_url.clone(),
            mweb_url: self.mweb_url.clone(),
        }
    }

    /// Records who pays. JSAPI orders name their payer when placed, and
    /// another one is refused; NATIVE, APP and MWEB orders learn it now.
    /// WeChat always tells the merchant an openid (under appid), and a
    /// sub_openid when the order has a sub_appid; what is not given is made up.
    fn take_payer(&mut self, payer: Payer) -> Result<(), TransitionError> {
        let differs = |have: &str, given: &Option<String>| {
            !have.is_empty() && given.as_deref().is_some_and(|g| g != have)
        };
        if differs(&self.openid, &payer.openid) || differs(&self.sub_openid, &payer.sub_openid) {
            return Err(TransitionError::OtherPayer);
        }
        if payer.sub_openid.is_some() && self.sub_app_id.is_none() {
            return Err(TransitionError::NoSubAppId);
        }
        if self.openid.is_empty() {
            self.openid = payer.openid.unwrap_or_else(new_openid);
        }
        if self.sub_openid.is_empty() && self.sub_app_id.is_some() {
            self.sub_openid = payer.sub_openid.unwrap_or_else(new_openid);
        }
        Ok(())
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

/// `weixin://wxpay/bizpayurl?pr=` + 7 letters and digits, the shape of
/// WeChat's NATIVE (模式二) code_url.
fn code_url() -> String {
    format!("weixin://wxpay/bizpayurl?pr={}", random_text(7))
}

/// WeChat's H5 checkout page for the prepay_id, with its numeric `package`.
fn mweb_url(prepay_id: &str) -> String {
    let package = rand::rng().random_range(1_000_000_000..10_000_000_000u64);
    format!(
        "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}&package={package}"
    )
}

/// 28 characters starting with `o`, like an openid.
fn new_openid() -> String {
    format!("o{}", random_text(27))
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
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

    pub(super) fn owner() -> Owner {
        Owner {
            mch_id: "1900000109".into(),
            sub_mch_id: None,
        }
    }

    pub(super) fn new_order(no: &str, fee: i64) -> NewOrder {
        let mut business = Fields::new();
        business.insert("out_trade_no".into(), no.into());
        business.insert("total_fee".into(), fee.to_string());
        NewOrder {
            owner: owner(),
            app_id: "wx0123456789abcdef".into(),
            sub_app_id: None,
            sub_openid: String::new(),
            product_id: String::new(),
            out_trade_no: no.into(),
            body: "test".into(),
            attach: String::new(),
            openid: "o1".into(),
            trade_type: "JSAPI".into(),
            total_fee: fee,
            notify_url: "http://127.0.0.1:1/notify".into(),
            time_expire: None,
            sign_type: SignType::Md5,
            api_version: ApiVersion::V2,
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
        assert_eq!(book.close(&owner(), "A2", now, TimeDelta::zero()), Ok(()));
        assert_eq!(
            book.pay("A2", None, Payer::default(), now)
                .map(|o| o.status),
            Err(TransitionError::Conflict(OrderStatus::Closed))
        );
        assert_eq!(
            book.close(&owner(), "A2", now, TimeDelta::zero()),
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
        let paid = book.pay("A3", None, Payer::default(), now).expect("paid");
        assert!(paid.transaction_id.is_some());
        assert_eq!(
            book.close(&owner(), "A3", now, TimeDelta::minutes(5)),
            Err(CloseError::Paid)
        );
        assert!(matches!(
            book.pay("A3", None, Payer::default(), now),
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
            book.pay("A4", None, Payer::default(), later)
                .map(|o| o.status),
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
        assert_eq!(
            book.close(&owner(), "A7", later, five),
            Err(CloseError::TooYoung)
        );
        book.age("A7", TimeDelta::seconds(1)).expect("aged");
        assert_eq!(book.close(&owner(), "A7", later, five), Ok(()));
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
        let paid = book
            .pay("A8", None, Payer::default(), now)
            .expect("the retry pays");
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
            book.pay("A9", None, Payer::default(), now)
                .map(|o| o.status),
            Err(TransitionError::Expired)
        );
        assert_eq!(
            book.age("nope", TimeDelta::seconds(1)).map(|o| o.status),
            Err(TransitionError::NotFound)
        );
    }

    #[test]
    fn another_owner_neither_finds_nor_reuses_an_order() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("B1", 100), now).expect("placed");
        let stranger = Owner {
            mch_id: "1900000200".into(),
            sub_mch_id: Some("1900000201".into()),
        };
        let by_no = OrderRef::OutTradeNo("B1".into());
        assert!(book.find(&owner(), &by_no).is_some());
        assert!(book.find(&stranger, &by_no).is_none());
        assert_eq!(
            book.close(&stranger, "B1", now, TimeDelta::zero()),
            Err(CloseError::NotFound)
        );
        let theirs = NewOrder {
            owner: stranger,
            ..new_order("B1", 100)
        };
        assert_eq!(
            book.place(theirs, now),
            Err(PlaceError::UsedByAnotherMerchant)
        );
    }

    #[test]
    fn native_orders_get_a_code_url_and_learn_their_payer_when_paid() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let native = NewOrder {
            trade_type: "NATIVE".into(),
            openid: String::new(),
            ..new_order("B2", 100)
        };
        let placed = book.place(native.clone(), now).expect("placed");
        let code_url = placed.code_url.clone().expect("a QR code");
        assert!(code_url.starts_with("weixin://wxpay/bizpayurl?pr="));
        assert_eq!(placed.mweb_url, None);
        assert_eq!(book.place(native, now), Ok(placed));
        let sub_payer = Payer {
            sub_openid: Some("os1".into()),
            ..Payer::default()
        };
        assert_eq!(
            book.pay("B2", None, sub_payer, now).map(|o| o.status),
            Err(TransitionError::NoSubAppId)
        );
        let payer = Payer {
            openid: Some("oScanner".into()),
            ..Payer::default()
        };
        let paid = book.pay("B2", None, payer, now).expect("paid");
        assert_eq!(paid.openid, "oScanner");
        assert_eq!(paid.sub_openid, "");
    }

    #[test]
    fn a_jsapi_order_keeps_its_payer() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("B3", 100), now).expect("placed");
        let other = Payer {
            openid: Some("o2".into()),
            ..Payer::default()
        };
        assert_eq!(
            book.pay("B3", None, other, now).map(|o| o.status),
            Err(TransitionError::OtherPayer)
        );
        let paid = book.pay("B3", None, Payer::default(), now).expect("paid");
        assert_eq!(paid.openid, "o1");
    }

    #[test]
    fn a_service_provider_order_paid_without_a_sub_openid_gets_one() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        let order = NewOrder {
            trade_type: "APP".into(),
            openid: String::new(),
            sub_app_id: Some("wx2222222222222222".into()),
            ..new_order("B4", 100)
        };
        book.place(order, now).expect("placed");
        let paid = book.pay("B4", None, Payer::default(), now).expect("paid");
        assert_eq!((paid.openid.len(), paid.sub_openid.len()), (28, 28));
        assert!(paid.openid.starts_with('o') && paid.openid != paid.sub_openid);
    }

    #[test]
    fn a_transaction_id_is_used_once() {
        let mut book = OrderBook::default();
        let now = Utc::now();
        book.place(new_order("A5", 100), now).expect("placed");
        book.place(new_order("A6", 100), now).expect("placed");
        book.pay("A5", Some("T1".into()), Payer::default(), now)
            .expect("paid");
        assert_eq!(
            book.pay("A6", Some("T1".into()), Payer::default(), now)
                .map(|o| o.status),
            Err(TransitionError::TransactionIdTaken)
        );
        assert_eq!(
            book.find_by_transaction_id("T1")
                .map(|o| o.out_trade_no.as_str()),
            Some("A5")
        );
    }
}
