//! ReconcileBill: one day of WeChat's bill (Beijing time) against the local
//! orders and refunds. Each bill row is matched by its number; what WeChat has
//! and this service does not know yet is repaired through the state machine
//! only after WeChat confirms it again (orderquery, refundquery), so a bill row
//! alone never changes money here. Everything else becomes a [`Discrepancy`]
//! with a log line and a metric. The report is stored: a day is reconciled once
//! unless asked again.

use std::collections::HashSet;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use wxpay_core::domain::{
    BillReport, Discrepancy, DiscrepancyKind, OrderStatus, OutRefundNo, OutTradeNo, RefundStatus,
};
use wxpay_core::wechat::bill::Bill;
use wxpay_store::{DueRefund, RefundOutcome, RefundUpdate};

use super::{refund::RefundCheck, Payments};
use crate::error::ApiError;

/// One row of the bill, as the reconciliation needs it: a payment, or a refund
/// of one (WeChat's ALL bill lists a refund as its own row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillEntry {
    pub out_trade_no: String,
    pub transaction_id: String,
    /// The order's total, fen.
    pub total_fee: i64,
    pub refund: Option<BillRefund>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fee: i64,
    /// The bill lists the refund as done (退款状态 SUCCESS).
    pub succeeded: bool,
}

/// WeChat's bill of a day: its rows, and what its own summary says if that does
/// not add up to them.
#[derive(Debug, Clone, Default)]
pub struct DayBill {
    pub entries: Vec<BillEntry>,
    pub summary_problem: Option<String>,
}

impl From<Option<Bill>> for DayBill {
    fn from(bill: Option<Bill>) -> Self {
        day_bill(bill)
    }
}

/// The reconciliation's view of a downloaded bill (`None`: no trade that day).
fn day_bill(bill: Option<Bill>) -> DayBill {
    let Some(bill) = bill else {
        return DayBill::default();
    };
    let summary_problem = bill.summary_problem();
    let entries = bill
        .rows
        .into_iter()
        .map(|row| BillEntry {
            out_trade_no: row.out_trade_no,
            transaction_id: row.transaction_id,
            total_fee: row.total_fee,
            refund: row.refund.map(|r| BillRefund {
                out_refund_no: r.out_refund_no,
                refund_id: r.refund_id,
                refund_fee: r.refund_fee,
                succeeded: r.status == "SUCCESS",
            }),
        })
        .collect();
    DayBill {
        entries,
        summary_problem,
    }
}

/// WeChat has a day's bill ready at about 10:00 Beijing time the next day.
const BILL_READY_HOUR: u32 = 10;

/// The instants `[start, end)` of a Beijing-time day, in UTC.
pub fn china_day(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |d: NaiveDate| {
        china()
            .from_local_datetime(&d.and_time(NaiveTime::MIN))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
    (start(day), start(next))
}

/// When the bill of `day` can be asked for.
pub fn bill_ready_at(day: NaiveDate) -> DateTime<Utc> {
    let (_, end) = china_day(day);
    end + chrono::Duration::hours(i64::from(BILL_READY_HOUR))
}

fn china() -> chrono::FixedOffset {
    match chrono::FixedOffset::east_opt(8 * 3600) {
        Some(tz) => tz,
        None => unreachable!("UTC+8 is a valid offset"),
    }
}

/// Parses `yyyyMMdd`, the bill's date format.
pub fn parse_bill_date(s: &str) -> Result<NaiveDate, ApiError> {
    let bad = || {
        ApiError::InvalidArgument(wxpay_core::domain::ValidationError::new(
            "bill_date",
            "must be a date as yyyyMMdd",
        ))
    };
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    NaiveDate::parse_from_str(s, "%Y%m%d").map_err(|_| bad())
}

/// Builds the report while the day is walked.
struct Tally {
    report: BillReport,
}

impl Tally {
    fn matched(&mut self) {
        self.report.matched += 1;
    }

    fn repaired(&mut self) {
        self.report.repaired += 1;
    }

    fn differ(
        &mut self,
        out_trade_no: &str,
        out_refund_no: &str,
        kind: DiscrepancyKind,
        detail: String,
    ) {
        tracing::warn!(bill_date = %self.report.bill_date, out_trade_no, out_refund_no,
            kind = kind.as_str(), %detail, "bill discrepancy");
        metrics::counter!("wxpay_bill_discrepancies_total", "kind" => kind.as_str()).increment(1);
        self.report.discrepancies.push(Discrepancy {
            out_trade_no: out_trade_no.to_owned(),
            out_refund_no: out_refund_no.to_owned(),
            kind,
            detail,
        });
    }
}

impl Payments {
    /// ReconcileBill: the stored report of the day, or (none yet, or `again`)
    /// a new reconciliation against the bill WeChat gives now.
    #[tracing::instrument(skip(self))]
    pub async fn reconcile_bill(
        &self,
        bill_date: &str,
        again: bool,
    ) -> Result<BillReport, ApiError> {
        let day = parse_bill_date(bill_date)?;
        if !again {
            if let Some(report) = self.store.bill_report(day).await? {
                return Ok(report);
            }
        }
        let ready = bill_ready_at(day);
        if Utc::now() < ready {
            return Err(ApiError::FailedPrecondition(format!(
                "WeChat's bill of {bill_date} is ready after {} (10:00 Beijing time the next day)",
                ready.to_rfc3339()
            )));
        }
        self.reconcile_downloaded(day).await
    }

    /// Downloads every merchant's bill of `day` and reconciles them, whatever
    /// the hour (the sandbox serves a day's bill at once; WeChat may not have
    /// it yet). Each merchant's bill is asked for with its own credentials and
    /// in its own dialect (a sub merchant's with its sub_mch_id; a v3 one's
    /// file checked against its SHA1), and the day's one report covers v2 and
    /// v3 merchants alike. Every bill is fetched before anything is compared:
    /// one that cannot be had or proven (a v3 file whose hash does not match)
    /// fails the whole day, so no report is stored and nothing is repaired
    /// from a day seen in part.
    pub async fn reconcile_downloaded(&self, day: NaiveDate) -> Result<BillReport, ApiError> {
        let mut bills = Vec::with_capacity(self.merchants.len());
        for wechat in &self.merchants {
            let name = wechat.entry().name.clone();
            let bill = wechat.bill(day).await.map_err(|e| {
                tracing::warn!(bill_date = %day, merchant = %name, error = %e,
                    "this merchant's bill could not be had; the day is not reconciled");
                ApiError::from(e)
            })?;
            bills.push((name, day_bill(bill)));
        }
        self.reconcile_bills(day, bills).await
    }

    /// A new reconciliation of `bill` (WeChat's bill of `day` for the first
    /// configured merchant, `default` when it is the only one) against the
    /// local state, stored as the day's report.
    pub async fn reconcile_day(
        &self,
        day: NaiveDate,
        bill: DayBill,
    ) -> Result<BillReport, ApiError> {
        let name = self
            .merchants
            .first()
            .map(|c| c.entry().name.clone())
            .ok_or_else(|| ApiError::Internal("no merchant is configured".into()))?;
        self.reconcile_bills(day, vec![(name, bill)]).await
    }

    /// The bills of `day`, one per merchant named, against the local orders
    /// and refunds of those merchants. Order and refund numbers are unique
    /// across merchants (this service makes every out_trade_no), so one set of
    /// numbers serves all bills.
    async fn reconcile_bills(
        &self,
        day: NaiveDate,
        bills: Vec<(String, DayBill)>,
    ) -> Result<BillReport, ApiError> {
        let mut tally = Tally {
            report: BillReport {
                bill_date: day,
                wechat_rows: bills.iter().map(|(_, b)| b.entries.len() as u64).sum(),
                matched: 0,
                repaired: 0,
                discrepancies: Vec::new(),
                reconciled_at: Utc::now(),
            },
        };
        // With one merchant, details read as before; with several each says whose.
        let several = self.merchants.len() > 1;
        let whose = |merchant: &str, detail: String| {
            if several {
                format!("merchant {merchant}: {detail}")
            } else {
                detail
            }
        };
        let covered: HashSet<&str> = bills.iter().map(|(name, _)| name.as_str()).collect();
        let mut payments = HashSet::new();
        let mut refunds = HashSet::new();
        for (merchant, bill) in &bills {
            if let Some(problem) = &bill.summary_problem {
                tally.differ(
                    "",
                    "",
                    DiscrepancyKind::SummaryMismatch,
                    whose(merchant, problem.clone()),
                );
            }
            for entry in &bill.entries {
                match &entry.refund {
                    None => {
                        payments.insert(entry.out_trade_no.clone());
                        self.check_payment(entry, &mut tally).await?;
                    }
                    Some(refund) => {
                        refunds.insert(refund.out_refund_no.clone());
                        self.check_bill_refund(entry, refund, &mut tally).await?;
                    }
                }
            }
        }
        let (from, to) = china_day(day);
        for order in self.store.orders_paid_between(from, to).await? {
            let merchant = order.placement.merchant.as_str();
            if !covered.contains(merchant) || payments.contains(order.out_trade_no.as_str()) {
                continue;
            }
            tally.differ(
                order.out_trade_no.as_str(),
                "",
                DiscrepancyKind::MissingAtWechat,
                whose(
                    merchant,
                    format!(
                        "paid here ({} fen, transaction {}) but not in WeChat's bill",
                        order.total_fee,
                        order.transaction_id.as_deref().unwrap_or("-")
                    ),
                ),
            );
        }
        for refund in self.store.refunds_succeeded_between(from, to).await? {
            if refunds.contains(refund.out_refund_no.as_str()) {
                continue;
            }
            // Whose refund it is: its order's merchant, read only when there
            // are several (one read per refund missing from the bills, which
            // are few).
            let merchant = if !several {
                None
            } else {
                match self.store.order(&refund.out_trade_no).await? {
                    Some(order) if covered.contains(order.placement.merchant.as_str()) => {
                        Some(order.placement.merchant.to_string())
                    }
                    _ => continue,
                }
            };
            let detail = format!(
                "refunded here ({} fen) but not in WeChat's bill",
                refund.refund_fee
            );
            tally.differ(
                refund.out_trade_no.as_str(),
                refund.out_refund_no.as_str(),
                DiscrepancyKind::RefundMissingAtWechat,
                match merchant {
                    Some(m) => whose(&m, detail),
                    None => detail,
                },
            );
        }
        let report = tally.report;
        self.store.save_bill_report(&report).await?;
        tracing::info!(bill_date = %day, rows = report.wechat_rows, matched = report.matched,
            repaired = report.repaired, discrepancies = report.discrepancies.len(), "bill reconciled");
        Ok(report)
    }

    async fn check_payment(&self, entry: &BillEntry, tally: &mut Tally) -> Result<(), ApiError> {
        let no = entry.out_trade_no.as_str();
        let order = match OutTradeNo::parse(no) {
            Ok(parsed) => self.store.order(&parsed).await?,
            Err(_) => None,
        };
        let Some(order) = order else {
            tally.differ(
                no,
                "",
                DiscrepancyKind::MissingLocally,
                format!(
                    "WeChat has a payment of {} fen (transaction {}) for an order unknown here",
                    entry.total_fee, entry.transaction_id
                ),
            );
            return Ok(());
        };
        if order.total_fee.fen() != entry.total_fee {
            tally.differ(
                no,
                "",
                DiscrepancyKind::AmountMismatch,
                format!(
                    "the bill says {} fen, the order is {}",
                    entry.total_fee, order.total_fee
                ),
            );
            return Ok(());
        }
        if matches!(order.status, OrderStatus::Success | OrderStatus::Refund) {
            tally.matched();
            return Ok(());
        }
        // WeChat has it paid and we do not (a lost notification): orderquery
        // confirms, and the state machine records it and publishes the change.
        match self.query_order(&order.out_trade_no).await {
            Ok(now) if matches!(now.status, OrderStatus::Success | OrderStatus::Refund) => {
                tracing::info!(out_trade_no = no, "bill reconciliation repaired a payment");
                tally.repaired();
            }
            Ok(now) => tally.differ(
                no,
                "",
                DiscrepancyKind::StatusMismatch,
                format!(
                    "paid in WeChat's bill, {} here and by orderquery",
                    now.status
                ),
            ),
            Err(e) => tally.differ(
                no,
                "",
                DiscrepancyKind::StatusMismatch,
                format!(
                    "paid in WeChat's bill, {} here; orderquery failed: {e}",
                    order.status
                ),
            ),
        }
        Ok(())
    }

    async fn check_bill_refund(
        &self,
        entry: &BillEntry,
        billed: &BillRefund,
        tally: &mut Tally,
    ) -> Result<(), ApiError> {
        let no = entry.out_trade_no.as_str();
        let rno = billed.out_refund_no.as_str();
        let local = match OutRefundNo::parse(rno) {
            Ok(parsed) => self.store.refund(&parsed).await?,
            Err(_) => None,
        };
        let Some(refund) = local else {
            if self.adopt_refund(entry, billed).await {
                tally.repaired();
            } else {
                tally.differ(
                    no,
                    rno,
                    DiscrepancyKind::RefundMissingLocally,
                    format!(
                        "WeChat's bill has a refund of {} fen not recorded here",
                        billed.refund_fee
                    ),
                );
            }
            return Ok(());
        };
        if refund.refund_fee.fen() != billed.refund_fee {
            tally.differ(
                no,
                rno,
                DiscrepancyKind::RefundAmountMismatch,
                format!(
                    "the bill says {} fen, the refund is {}",
                    billed.refund_fee, refund.refund_fee
                ),
            );
            return Ok(());
        }
        if refund.status == RefundStatus::Success || !billed.succeeded {
            tally.matched();
            return Ok(());
        }
        let mut settled = false;
        if refund.status == RefundStatus::Processing {
            let order = self.get_order(&refund.out_trade_no).await?;
            let due = DueRefund {
                refund: refund.clone(),
                order,
                attempts: 1,
            };
            settled = matches!(
                self.check_refund(&due).await,
                Ok(RefundCheck::Settled(RefundStatus::Success))
            );
        }
        if settled {
            tally.repaired();
        } else {
            tally.differ(
                no,
                rno,
                DiscrepancyKind::RefundStatusMismatch,
                format!("done in WeChat's bill, {} here", refund.status),
            );
        }
        Ok(())
    }

    /// Records a refund the bill has and this service never saw, once
    /// refundquery confirms it. Whether it is now recorded as done.
    async fn adopt_refund(&self, entry: &BillEntry, billed: &BillRefund) -> bool {
        let Ok(no) = OutTradeNo::parse(&entry.out_trade_no) else {
            return false;
        };
        let Ok(Some(order)) = self.store.order(&no).await else {
            return false;
        };
        let Ok(wechat) = self.wechat_for(&order) else {
            return false;
        };
        // A number this service could never have made is no refund of ours.
        let Ok(out_refund_no) = OutRefundNo::parse(&billed.out_refund_no) else {
            return false;
        };
        let Ok(Some(state)) = wechat.refund_query(&order, &out_refund_no).await else {
            return false;
        };
        let update = RefundUpdate {
            out_refund_no,
            out_trade_no: order.out_trade_no.clone(),
            refund_fee: state.refund_fee,
            refund_id: state.refund_id.clone(),
            transaction_id: state.transaction_id.clone(),
            total_fee: state.total_fee,
            status: state.status,
            succeeded_at: state.success_time,
            failure: None,
        };
        matches!(
            self.ledger.apply_refund(&update).await,
            Ok(RefundOutcome::Applied { ref refund, .. }) if refund.status == RefundStatus::Success
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_china_day_starts_at_sixteen_utc_the_day_before() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid");
        let (from, to) = china_day(day);
        assert_eq!(from.to_rfc3339(), "2026-11-22T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-23T16:00:00+00:00");
        assert_eq!(bill_ready_at(day).to_rfc3339(), "2026-11-24T02:00:00+00:00");
    }

    #[test]
    fn bill_dates_are_eight_digits_of_a_real_day() {
        assert!(parse_bill_date("20261123").is_ok());
        for bad in ["2026-11-23", "20261131", "2026112", "abcdefgh", ""] {
            assert!(parse_bill_date(bad).is_err(), "{bad}");
        }
    }
}
