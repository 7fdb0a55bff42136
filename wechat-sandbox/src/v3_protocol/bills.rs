//! The v3 trade bill request, WeChat's side: `GET /v3/bill/tradebill`'s query
//! (`bill_date` as `YYYY-MM-DD`, `bill_type` ALL | SUCCESS | REFUND, `tar_type`
//! GZIP, a service provider's `sub_mchid`) checked and read. What the bill
//! holds is `bill`'s; pure, like its parent.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::V3Error;
use crate::bill::BillType;

/// What a trade bill request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBillRequest {
    /// The Beijing-time day.
    pub date: NaiveDate,
    pub bill_type: BillType,
    /// `tar_type=GZIP`: the file is served gzipped (and hashed as served).
    pub gzip: bool,
    /// A provider's one sub merchant; absent: the whole account.
    pub sub_mchid: Option<String>,
}

/// Reads the query of `GET /v3/bill/tradebill`; a malformed or unknown value
/// is 400 PARAM_ERROR.
pub fn trade_bill_request(query: &BTreeMap<String, String>) -> Result<TradeBillRequest, V3Error> {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let date =
        get("bill_date").ok_or_else(|| V3Error::param("输入源“/query/bill_date”为必填项"))?;
    // Exactly YYYY-MM-DD: chrono alone would take `2026-1-5`.
    let date = (date.len() == 10)
        .then(|| NaiveDate::parse_from_str(date, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| V3Error::param("bill_date格式错误，须为YYYY-MM-DD"))?;
    let bill_type = match get("bill_type") {
        None | Some("ALL") => BillType::All,
        Some("SUCCESS") => BillType::Success,
        Some("REFUND") => BillType::Refund,
        Some(_) => return Err(V3Error::param("bill_type须为ALL、SUCCESS或REFUND")),
    };
    let gzip = match get("tar_type") {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(V3Error::param("tar_type须为GZIP")),
    };
    Ok(TradeBillRequest {
        date,
        bill_type,
        gzip,
        sub_mchid: get("sub_mchid").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<TradeBillRequest, &'static str> {
        let query = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        trade_bill_request(&query).map_err(|e| e.code)
    }

    #[test]
    fn a_day_in_v3s_spelling_with_its_options() {
        let r = read(&[
            ("bill_date", "2026-12-06"),
            ("bill_type", "ALL"),
            ("tar_type", "GZIP"),
            ("sub_mchid", "1900000401"),
        ])
        .expect("valid");
        assert_eq!(r.date, NaiveDate::from_ymd_opt(2026, 12, 6).expect("a day"));
        assert_eq!(r.bill_type, BillType::All);
        assert!(r.gzip);
        assert_eq!(r.sub_mchid.as_deref(), Some("1900000401"));
        let plain = read(&[("bill_date", "2026-12-06")]).expect("valid");
        assert_eq!((plain.bill_type, plain.gzip), (BillType::All, false));
    }

    #[test]
    fn anything_else_is_a_param_error() {
        for pairs in [
            &[][..],
            &[("bill_date", "20261206")],
            &[("bill_date", "2026-1-6")],
            &[("bill_date", "2026-02-30")],
            &[
                ("bill_date", "2026-12-06"),
                ("bill_type", "RECHARGE_REFUND"),
            ],
            &[("bill_date", "2026-12-06"), ("tar_type", "ZIP")],
        ] {
            assert_eq!(read(pairs), Err("PARAM_ERROR"), "{pairs:?}");
        }
    }
}
