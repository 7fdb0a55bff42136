//! The daily bill (`/pay/downloadbill`): WeChat's text file of one Beijing-time
//! day's trades, built from the order book. Pure: it reads the book and writes
//! text, no I/O and no clock.
//!
//! The format, as WeChat's docs and the bills SDKs parse show it: a header line of
//! Chinese column names; one data row per payment (paid that day) or refund
//! (applied for that day), every field prefixed with a backquote; then a summary
//! header and one summary row. Amounts are yuan with two decimals, written from
//! integer fen; the fee (手续费) has five decimals, each row's fee rounded half up
//! to the fen at WeChat's 0.60% JSAPI rate, negative on refund rows (the fee goes
//! back). Lines end in CRLF and the file starts with a UTF-8 byte-order mark, as
//! bills seen through SDKs do (*unconfirmed*: parse tolerantly). Two layouts: the
//! current 27-column one (merchants with 免充值券 settlement) and the older
//! 24-column one; SUCCESS and REFUND bills have their own column lists.
//! Each bill is one account's: its own trades and, for a service provider,
//! its sub merchants' (特约商户号 filled, 0 on a direct merchant's rows).
//! v2 and v3 trades are one book, so one bill lists both; v3's trade bill
//! (`v3_bills`) serves this same text, and [`Downloads`] keeps each file it
//! described until it is fetched.

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    str::FromStr,
};

use flate2::{write::GzEncoder, Compression};

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use wxpay_core::domain::OrderStatus;

use crate::{
    notify::china_time_with_dashes,
    orders::{OrderBook, Owner, RefundStatus, SandboxOrder, SandboxRefund},
};

/// Which trades a bill lists (`bill_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillType {
    /// Payments and refunds.
    All,
    /// Payments only.
    Success,
    /// Refunds only.
    Refund,
    /// Refunds of recharge coupons: the sandbox has no coupons, so always empty.
    RechargeRefund,
}

impl FromStr for BillType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ALL" => Ok(BillType::All),
            "SUCCESS" => Ok(BillType::Success),
            "REFUND" => Ok(BillType::Refund),
            "RECHARGE_REFUND" => Ok(BillType::RechargeRefund),
            _ => Err(()),
        }
    }
}

/// Which of WeChat's two bill layouts a merchant gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillLayout {
    /// 27 columns (ALL), 订单金额 / 申请退款金额 / 费率备注 at the end, 7-field summary.
    #[default]
    #[serde(rename = "27")]
    Current,
    /// 24 columns (ALL), 子商户号 / 总金额 / 代金券或立减优惠…, 5-field summary.
    #[serde(rename = "24")]
    Legacy,
}

impl FromStr for BillLayout {
    type Err = ();

    /// `27` or `24`, the number of columns of the ALL bill.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "27" => Ok(BillLayout::Current),
            "24" => Ok(BillLayout::Legacy),
            _ => Err(()),
        }
    }
}

/// WeChat's fee rate for the sandbox's merchant, in hundredths of a percent.
const FEE_RATE_BP: i64 = 60;
const FEE_RATE_TEXT: &str = "0.60%";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    TradeTime,
    AppId,
    MchId,
    SubMchId,
    DeviceInfo,
    TransactionId,
    OutTradeNo,
    OpenId,
    TradeType,
    TradeState,
    BankType,
    FeeType,
    SettlementTotal,
    Coupon,
    RefundApplyTime,
    RefundSuccessTime,
    RefundId,
    OutRefundNo,
    RefundFee,
    CouponRefund,
    RefundType,
    RefundStatus,
    Body,
    Attach,
    Poundage,
    Rate,
    TotalFee,
    AppliedRefund,
    RateRemark,
}

impl Col {
    fn header(self, layout: BillLayout) -> &'static str {
        let legacy = layout == BillLayout::Legacy;
        match self {
            Col::TradeTime => "交易时间",
            Col::AppId => "公众账号ID",
            Col::MchId => "商户号",
            Col::SubMchId if legacy => "子商户号",
            Col::SubMchId => "特约商户号",
            Col::DeviceInfo => "设备号",
            Col::TransactionId => "微信订单号",
            Col::OutTradeNo => "商户订单号",
            Col::OpenId => "用户标识",
            Col::TradeType => "交易类型",
            Col::TradeState => "交易状态",
            Col::BankType => "付款银行",
            Col::FeeType => "货币种类",
            Col::SettlementTotal if legacy => "总金额",
            Col::SettlementTotal => "应结订单金额",
            Col::Coupon if legacy => "代金券或立减优惠金额",
            Col::Coupon => "代金券金额",
            Col::RefundApplyTime => "退款申请时间",
            Col::RefundSuccessTime => "退款成功时间",
            Col::RefundId => "微信退款单号",
            Col::OutRefundNo => "商户退款单号",
            Col::RefundFee => "退款金额",
            Col::CouponRefund if legacy => "代金券或立减优惠退款金额",
            Col::CouponRefund => "充值券退款金额",
            Col::RefundType => "退款类型",
            Col::RefundStatus => "退款状态",
            Col::Body => "商品名称",
            Col::Attach => "商户数据包",
            Col::Poundage => "手续费",
            Col::Rate => "费率",
            Col::TotalFee => "订单金额",
            Col::AppliedRefund => "申请退款金额",
            Col::RateRemark => "费率备注",
        }
    }
}

/// The columns every bill starts with.
const TRADE: [Col; 12] = [
    Col::TradeTime,
    Col::AppId,
    Col::MchId,
    Col::SubMchId,
    Col::DeviceInfo,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::OpenId,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::FeeType,
];

/// The columns of one bill type in one layout, in WeChat's order. The current
/// layout is the legacy one plus 订单金额, (申请退款金额,) 费率备注 at the end.
fn columns(bill_type: BillType, layout: BillLayout) -> Vec<Col> {
    let mut cols = TRADE.to_vec();
    cols.extend([Col::SettlementTotal, Col::Coupon]);
    let refunds = [
        Col::RefundId,
        Col::OutRefundNo,
        Col::RefundFee,
        Col::CouponRefund,
        Col::RefundType,
        Col::RefundStatus,
    ];
    match bill_type {
        BillType::All => cols.extend(refunds),
        BillType::Success => {}
        BillType::Refund | BillType::RechargeRefund => {
            cols.extend([Col::RefundApplyTime, Col::RefundSuccessTime]);
            cols.extend(refunds);
        }
    }
    cols.extend([Col::Body, Col::Attach, Col::Poundage, Col::Rate]);
    if layout == BillLayout::Current {
        cols.push(Col::TotalFee);
        if bill_type != BillType::Success {
            cols.push(Col::AppliedRefund);
        }
        cols.push(Col::RateRemark);
    }
    cols
}

/// One line of the bill: a payment, or a refund of a payment.
#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    Payment(&'a SandboxOrder),
    Refund(&'a SandboxOrder, &'a SandboxRefund),
}

impl Row<'_> {
    /// When the row happened, for the day it belongs to and the order of rows.
    fn at(&self) -> Option<DateTime<Utc>> {
        match self {
            Row::Payment(order) => order.time_end,
            Row::Refund(_, refund) => Some(refund.created_at),
        }
    }

    fn order(&self) -> &SandboxOrder {
        match self {
            Row::Payment(order) | Row::Refund(order, _) => order,
        }
    }

    /// Fen paid, settled (应结订单金额 / 总金额 and 订单金额): zero on refund rows.
    fn paid(&self) -> i64 {
        match self {
            Row::Payment(order) => order.total_fee,
            Row::Refund(..) => 0,
        }
    }

    /// Fen refunded (退款金额 and 申请退款金额): zero on payment rows.
    fn refunded(&self) -> i64 {
        match self {
            Row::Payment(_) => 0,
            Row::Refund(_, refund) => refund.refund_fee,
        }
    }

    /// WeChat's fee in fen: charged on a payment, given back on a refund.
    fn poundage(&self) -> i64 {
        fee(self.paid()) - fee(self.refunded())
    }

    fn value(&self, col: Col) -> String {
        let order = self.order();
        let refund = match self {
            Row::Payment(_) => None,
            Row::Refund(_, r) => Some(*r),
        };
        let on_refund = |f: fn(&SandboxRefund) -> String, otherwise: &str| {
            refund.map_or_else(|| otherwise.to_owned(), f)
        };
        match col {
            Col::TradeTime => order
                .time_end
                .map(china_time_with_dashes)
                .unwrap_or_default(),
            Col::AppId => order.app_id.clone(),
            Col::MchId => order.owner.mch_id.clone(),
            // A direct merchant's trade has no sub merchant: WeChat writes 0.
            Col::SubMchId => order
                .owner
                .sub_mch_id
                .clone()
                .unwrap_or_else(|| "0".to_owned()),
            Col::DeviceInfo | Col::RateRemark => String::new(),
            Col::TransactionId => order.transaction_id.clone().unwrap_or_default(),
            Col::OutTradeNo => order.out_trade_no.clone(),
            Col::OpenId => order.openid.clone(),
            Col::TradeType => order.trade_type.clone(),
            Col::TradeState => match self {
                Row::Payment(_) => "SUCCESS".to_owned(),
                Row::Refund(..) => "REFUND".to_owned(),
            },
            Col::BankType => order
                .bank_type
                .clone()
                .unwrap_or_else(|| "OTHERS".to_owned()),
            Col::FeeType => "CNY".to_owned(),
            Col::SettlementTotal | Col::TotalFee => yuan(self.paid()),
            Col::Coupon | Col::CouponRefund => yuan(0),
            Col::RefundApplyTime => on_refund(|r| china_time_with_dashes(r.created_at), ""),
            Col::RefundSuccessTime => on_refund(
                |r| {
                    r.success_time
                        .map(china_time_with_dashes)
                        .unwrap_or_default()
                },
                "",
            ),
            // Payment rows write 0 for the refund's ids, as WeChat's bills do.
            Col::RefundId => on_refund(|r| r.refund_id.clone(), "0"),
            Col::OutRefundNo => on_refund(|r| r.out_refund_no.clone(), "0"),
            Col::RefundFee | Col::AppliedRefund => yuan(self.refunded()),
            Col::RefundType => on_refund(|_| "ORIGINAL".to_owned(), ""),
            Col::RefundStatus => on_refund(|r| r.status.as_str().to_owned(), ""),
            Col::Body => order.body.clone(),
            Col::Attach => order.attach.clone(),
            Col::Poundage => fee_text(self.poundage()),
            Col::Rate => FEE_RATE_TEXT.to_owned(),
        }
    }
}

/// The bill of `date` (a Beijing-time day) for `scope`'s account, or `None`
/// when it has no trades (WeChat's "No Bill Exist", not an error). A scope
/// without a sub merchant is the account's whole bill, its sub merchants'
/// trades included (a service provider's); with one, only that sub merchant's.
pub fn build(
    book: &OrderBook,
    scope: &Owner,
    date: NaiveDate,
    bill_type: BillType,
    layout: BillLayout,
) -> Option<String> {
    let in_scope = |o: &SandboxOrder| {
        o.owner.mch_id == scope.mch_id
            && (scope.sub_mch_id.is_none() || o.owner.sub_mch_id == scope.sub_mch_id)
    };
    let on_day = |t: Option<DateTime<Utc>>| t.is_some_and(|t| beijing_date(t) == date);
    let mut rows: Vec<Row<'_>> = Vec::new();
    if matches!(bill_type, BillType::All | BillType::Success) {
        rows.extend(
            book.all_orders()
                .filter(|o| in_scope(o))
                .filter(|o| matches!(o.status, OrderStatus::Success | OrderStatus::Refund))
                .map(Row::Payment)
                .filter(|r| on_day(r.at())),
        );
    }
    if matches!(bill_type, BillType::All | BillType::Refund) {
        // A closed refund moved no money; it is not a trade of the day.
        rows.extend(
            book.all_refunds()
                .filter(|r| r.status != RefundStatus::RefundClose)
                .filter_map(|r| Some(Row::Refund(book.get(&r.out_trade_no)?, r)))
                .filter(|r| in_scope(r.order()))
                .filter(|r| on_day(r.at())),
        );
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| {
        (a.at(), &a.order().out_trade_no, a.refunded()).cmp(&(
            b.at(),
            &b.order().out_trade_no,
            b.refunded(),
        ))
    });

    let cols = columns(bill_type, layout);
    let mut lines = Vec::with_capacity(rows.len() + 3);
    lines.push(
        cols.iter()
            .map(|c| c.header(layout))
            .collect::<Vec<_>>()
            .join(","),
    );
    for row in &rows {
        lines.push(backquoted(cols.iter().map(|c| row.value(*c))));
    }
    let paid: i64 = rows.iter().map(Row::paid).sum();
    let refunded: i64 = rows.iter().map(Row::refunded).sum();
    let poundage: i64 = rows.iter().map(Row::poundage).sum();
    let count = rows.len().to_string();
    match layout {
        BillLayout::Current => {
            lines.push(
                "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
                    .to_owned(),
            );
            lines.push(backquoted([
                count,
                yuan(paid),
                yuan(refunded),
                yuan(0),
                fee_text(poundage),
                yuan(paid),
                yuan(refunded),
            ]));
        }
        BillLayout::Legacy => {
            lines.push(
                "总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额".to_owned(),
            );
            lines.push(backquoted([
                count,
                yuan(paid),
                yuan(refunded),
                yuan(0),
                fee_text(poundage),
            ]));
        }
    }
    let mut text = String::from('\u{feff}');
    for line in lines {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    Some(text)
}

/// The bill gzipped, as `tar_type=GZIP` asks. Writing to memory cannot fail
/// short of running out of it; the error is kept for the caller to answer.
pub fn gzip(text: &str) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes())?;
    gz.finish()
}

/// One bill file a v3 trade bill answer pointed at: whose it is and the
/// exact bytes to serve (their SHA1 is what the answer gave, unless a fault
/// said otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub mch_id: String,
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

/// How many described files are kept: a client fetches its file at once
/// (WeChat's links live 30 seconds), so only the newest are worth keeping.
const MAX_DOWNLOADS: usize = 256;

/// The files v3 trade bill answers described, by download token, oldest
/// forgotten first. The file is fixed when described, as WeChat's is: a
/// trade made later does not change a file already hashed.
#[derive(Debug, Default)]
pub struct Downloads {
    files: HashMap<String, Download>,
    order: VecDeque<String>,
}

impl Downloads {
    pub fn insert(&mut self, token: String, download: Download) {
        while self.order.len() >= MAX_DOWNLOADS {
            if let Some(old) = self.order.pop_front() {
                self.files.remove(&old);
            }
        }
        self.order.push_back(token.clone());
        self.files.insert(token, download);
    }

    pub fn get(&self, token: &str) -> Option<&Download> {
        self.files.get(token)
    }
}

/// The Beijing-time calendar day of an instant.
fn beijing_date(t: DateTime<Utc>) -> NaiveDate {
    // UTC+8 is a valid offset; east_opt only fails beyond ±24 h.
    match FixedOffset::east_opt(8 * 3600) {
        Some(tz) => t.with_timezone(&tz).date_naive(),
        None => unreachable!("UTC+8 is a valid offset"),
    }
}

fn backquoted(values: impl IntoIterator<Item = String>) -> String {
    values
        .into_iter()
        .map(|v| format!("`{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Fen as yuan with two decimals, by integer arithmetic (`-` for negatives).
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A fee in fen as WeChat writes it: yuan with five decimals.
fn fee_text(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

/// WeChat's fee on `fen`, rounded half up to the fen. Amounts are at most
/// `Fee::MAX` (2^31 fen), so the product cannot overflow.
fn fee(fen: i64) -> i64 {
    (fen * FEE_RATE_BP + 5_000) / 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_from_fen_without_floats() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(1_000), "10.00");
        assert_eq!(yuan(123_456), "1234.56");
        assert_eq!(yuan(-205), "-2.05");
    }

    #[test]
    fn fees_round_half_up_to_the_fen_and_show_five_decimals() {
        // Rows from WeChat bills at 0.60%: 32.50 → 0.20000, 95.00 → 0.57000,
        // 6.00 → 0.04000, 0.01 → 0.00000.
        for (fen, text) in [
            (3_250, "0.20000"),
            (9_500, "0.57000"),
            (600, "0.04000"),
            (1, "0.00000"),
        ] {
            assert_eq!(fee_text(fee(fen)), text, "{fen}");
        }
        assert_eq!(fee_text(-fee(300)), "-0.02000");
    }

    #[test]
    fn the_layouts_have_wechats_column_counts() {
        let count = |t, l| columns(t, l).len();
        assert_eq!(count(BillType::All, BillLayout::Current), 27);
        assert_eq!(count(BillType::Success, BillLayout::Current), 20);
        assert_eq!(count(BillType::Refund, BillLayout::Current), 29);
        assert_eq!(count(BillType::All, BillLayout::Legacy), 24);
        assert_eq!(count(BillType::Success, BillLayout::Legacy), 18);
        assert_eq!(count(BillType::Refund, BillLayout::Legacy), 26);
        let header = |t, l| {
            columns(t, l)
                .iter()
                .map(|c| c.header(l))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            header(BillType::Success, BillLayout::Current),
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注"
        );
        assert_eq!(
            header(BillType::Refund, BillLayout::Legacy),
            "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率"
        );
    }

    #[test]
    fn bill_types_and_layouts_parse_from_their_wire_names() {
        assert_eq!("REFUND".parse(), Ok(BillType::Refund));
        assert_eq!("refund".parse::<BillType>(), Err(()));
        assert_eq!("24".parse(), Ok(BillLayout::Legacy));
        assert_eq!("25".parse::<BillLayout>(), Err(()));
    }

    #[test]
    fn only_the_newest_downloads_are_kept() {
        let mut d = Downloads::default();
        for n in 0..=MAX_DOWNLOADS {
            d.insert(
                format!("t{n}"),
                Download {
                    mch_id: "m".into(),
                    bytes: vec![],
                    gzip: false,
                },
            );
        }
        assert!(d.get("t0").is_none());
        assert!(d.get("t1").is_some());
        assert!(d.get(&format!("t{MAX_DOWNLOADS}")).is_some());
    }

    #[test]
    fn days_are_beijing_days() {
        let t = DateTime::parse_from_rfc3339("2024-01-01T16:30:00Z")
            .expect("valid")
            .to_utc();
        assert_eq!(
            beijing_date(t),
            NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid")
        );
    }
}
