//! WeChat's daily bill (`/pay/downloadbill`) as data. The file is text: a header
//! line of Chinese column names, one line per trade or refund whose every field
//! starts with a backquote, then a summary header and one summary line. Columns
//! are found by name, never position, so both layouts WeChat serves (the current
//! 27 columns and the older 24) read alike; amounts are yuan with two decimals,
//! turned into integer fen without floating point.

use std::collections::HashMap;

use crate::wechat::Fields;

/// Why a bill could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("the bill has no header line")]
    Empty,
    #[error("the bill has no column {0}")]
    MissingColumn(&'static str),
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
}

/// One line of the bill: a payment, or (trade state REFUND) a refund of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    pub trade_time: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    /// 交易状态: SUCCESS for a payment, REFUND for a refund, REVOKED, …
    pub trade_state: String,
    /// The order's amount in fen (订单金额, or 总金额 in the older layout); 0 on refund rows.
    pub total_fee: i64,
    pub refund: Option<BillRowRefund>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRowRefund {
    pub refund_id: String,
    pub out_refund_no: String,
    /// 申请退款金额 (or 退款金额 in the older layout), fen.
    pub refund_fee: i64,
    /// 退款状态: SUCCESS, PROCESSING, CHANGE, …
    pub status: String,
}

/// The bill's own totals line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillSummary {
    pub rows: u64,
    /// 订单总金额 (or 总交易额), fen.
    pub paid: i64,
    /// 申请退款总金额 (or 总退款金额, 退款总金额), fen.
    pub refunded: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub rows: Vec<BillRow>,
    pub summary: Option<BillSummary>,
}

impl Bill {
    /// What is wrong with the summary against the rows, if anything.
    pub fn summary_problem(&self) -> Option<String> {
        let Some(s) = &self.summary else {
            return Some("the bill has no summary line".into());
        };
        let paid: i64 = self.rows.iter().map(|r| r.total_fee).sum();
        let refunded: i64 = self
            .rows
            .iter()
            .filter_map(|r| r.refund.as_ref())
            .map(|r| r.refund_fee)
            .sum();
        let rows = self.rows.len() as u64;
        (s.rows != rows || s.paid != paid || s.refunded != refunded).then(|| {
            format!(
                "the summary says {} rows, {} fen paid, {} fen refunded; the rows add up to {rows}, {paid}, {refunded}",
                s.rows, s.paid, s.refunded
            )
        })
    }
}

/// Whether a FAIL reply to downloadbill means "no trade that day" (WeChat writes
/// `No Bill Exist`, its docs `NO Bill Exist`, and puts a code in `error_code`).
pub fn is_no_bill(reply: &Fields) -> bool {
    reply
        .get("return_msg")
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("no bill exist"))
}

/// Reads the bill's text (a UTF-8 BOM and CRLF line ends are fine).
pub fn parse(text: &str) -> Result<Bill, BillError> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim_end)
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    let (_, header) = lines.next().ok_or(BillError::Empty)?;
    let cols: HashMap<&str, usize> = header
        .split(',')
        .enumerate()
        .map(|(i, name)| (name.trim(), i))
        .collect();
    let col = |names: &[&'static str]| -> Result<usize, BillError> {
        names
            .iter()
            .find_map(|n| cols.get(n).copied())
            .ok_or(BillError::MissingColumn(names[0]))
    };
    let out_trade_no = col(&["商户订单号"])?;
    let transaction_id = col(&["微信订单号"])?;
    let trade_state = col(&["交易状态"])?;
    let trade_time = col(&["交易时间"])?;
    let total = col(&["订单金额", "总金额"])?;
    let refund_cols = match (
        col(&["商户退款单号"]),
        col(&["微信退款单号"]),
        col(&["申请退款金额", "退款金额"]),
        col(&["退款状态"]),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => Some((a, b, c, d)),
        // The SUCCESS bill type has no refund columns at all.
        _ => None,
    };
    let mut rows = Vec::new();
    let mut summary = None;
    while let Some((n, line)) = lines.next() {
        let line_no = n + 1;
        if !line.starts_with('`') {
            // The summary's header: its values are on the next line.
            let names: Vec<&str> = line.split(',').map(str::trim).collect();
            let (_, values) = lines.next().ok_or_else(|| BillError::BadLine {
                line: line_no,
                reason: "a summary header without its values".into(),
            })?;
            summary = Some(read_summary(&names, &fields(values), line_no + 1)?);
            break;
        }
        let f = fields(line);
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let amount = |i: usize, what: &str| {
            fen(get(i)).ok_or_else(|| BillError::BadLine {
                line: line_no,
                reason: format!("{what} {:?} is not an amount in yuan", get(i)),
            })
        };
        let state = get(trade_state).to_owned();
        let refund = match refund_cols {
            Some((rno, rid, fee, status)) if state == "REFUND" => Some(BillRowRefund {
                out_refund_no: get(rno).to_owned(),
                refund_id: get(rid).to_owned(),
                refund_fee: amount(fee, "the refund amount")?,
                status: get(status).to_owned(),
            }),
            _ => None,
        };
        rows.push(BillRow {
            trade_time: get(trade_time).replace('：', ":"),
            transaction_id: get(transaction_id).to_owned(),
            out_trade_no: get(out_trade_no).to_owned(),
            trade_state: state,
            total_fee: amount(total, "the order amount")?,
            refund,
        });
    }
    Ok(Bill { rows, summary })
}

fn read_summary(names: &[&str], values: &[&str], line: usize) -> Result<BillSummary, BillError> {
    let find = |candidates: &[&str]| {
        candidates
            .iter()
            .find_map(|c| names.iter().position(|n| n == c))
            .and_then(|i| values.get(i).copied())
    };
    let bad = |what: &str| BillError::BadLine {
        line,
        reason: format!("the summary's {what} is missing or unreadable"),
    };
    Ok(BillSummary {
        rows: find(&["总交易单数"])
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("总交易单数"))?,
        paid: find(&["订单总金额", "总交易额"])
            .and_then(fen)
            .ok_or_else(|| bad("total paid"))?,
        refunded: find(&["申请退款总金额", "总退款金额", "退款总金额"])
            .and_then(fen)
            .ok_or_else(|| bad("total refunded"))?,
    })
}

/// A line's fields without their leading backquote.
fn fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim().trim_start_matches('`'))
        .collect()
}

/// `"12.34"` yuan as 1234 fen; integer arithmetic only. At most two decimals;
/// an empty field or `-` is zero (WeChat writes those on rows without the amount).
pub fn fen(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s == "-" {
        return Some(0);
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let fen = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if negative { -fen } else { fen })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = "\u{feff}交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
`2026-11-23 16：33：45,`wx0123456789abcdef,`1900000109,`0,`,`4200000001,`T1,`oUpF8u,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.01,`0.00,`0,`0,`0.00,`0.00,`,`,`会员充值,`cart=42,`0.01,`0.60%,`1.01,`0.00,`\r\n\
`2026-11-23 17:00:00,`wx0123456789abcdef,`1900000109,`0,`,`4200000001,`T1,`oUpF8u,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`5000R1,`R1,`0.50,`0.00,`ORIGINAL,`SUCCESS,`会员充值,`cart=42,`-0.00,`0.60%,`0.00,`0.50,`\r\n\
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
`2,`1.01,`0.50,`0.00,`0.01,`1.01,`0.50\r\n";

    const LEGACY: &str = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n\
`2026-11-23 10:00:00,`wx1,`1900000109,`0,`,`4200000002,`T2,`o2,`JSAPI,`SUCCESS,`CMB_CREDIT,`CNY,`1234567.89,`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`7407.41,`0.60%\n\
总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\n\
`1,`1234567.89,`0.00,`0.00,`7407.41\n";

    #[test]
    fn the_current_layout_reads_by_column_name() {
        let bill = parse(CURRENT).expect("parses");
        assert_eq!(bill.rows.len(), 2);
        let pay = &bill.rows[0];
        assert_eq!((pay.out_trade_no.as_str(), pay.total_fee), ("T1", 101));
        assert_eq!(
            pay.trade_time, "2026-11-23 16:33:45",
            "full-width colons read"
        );
        assert!(pay.refund.is_none());
        let refund = bill.rows[1].refund.as_ref().expect("a refund row");
        assert_eq!(
            (
                refund.out_refund_no.as_str(),
                refund.refund_fee,
                refund.status.as_str()
            ),
            ("R1", 50, "SUCCESS")
        );
        assert_eq!(bill.summary_problem(), None);
    }

    #[test]
    fn the_older_layout_reads_alike() {
        let bill = parse(LEGACY).expect("parses");
        assert_eq!(bill.rows[0].total_fee, 123_456_789);
        assert_eq!(bill.summary.as_ref().map(|s| s.paid), Some(123_456_789));
        assert_eq!(bill.summary_problem(), None);
    }

    #[test]
    fn a_summary_that_does_not_add_up_is_reported() {
        let tampered = CURRENT.replace("`0.01,`1.01,`0.50\r\n", "`0.01,`1.02,`0.50\r\n");
        let problem = parse(&tampered).expect("parses").summary_problem();
        assert!(problem.is_some_and(|p| p.contains("102")));
    }

    #[test]
    fn amounts_are_exact_fen() {
        assert_eq!(fen("0.01"), Some(1));
        assert_eq!(fen("1234567.89"), Some(123_456_789));
        assert_eq!(fen("0.1"), Some(10));
        assert_eq!(fen("7"), Some(700));
        assert_eq!(fen("-0.50"), Some(-50));
        assert_eq!(fen(""), Some(0));
        assert_eq!(fen("-"), Some(0));
        for bad in ["1.234", "1,00", "¥1.00", ".5", "1e2", "0x10", "1.-1"] {
            assert_eq!(fen(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_column_is_named() {
        let err = parse("交易时间,商户订单号\n").expect_err("no 微信订单号");
        assert_eq!(err, BillError::MissingColumn("微信订单号"));
        assert_eq!(parse("\u{feff}").expect_err("empty"), BillError::Empty);
    }

    #[test]
    fn no_bill_is_recognised_in_both_spellings() {
        for msg in ["No Bill Exist", "NO Bill Exist"] {
            let reply: Fields = [
                ("return_code".to_owned(), "FAIL".to_owned()),
                ("return_msg".to_owned(), msg.to_owned()),
            ]
            .into_iter()
            .collect();
            assert!(is_no_bill(&reply));
        }
    }
}
