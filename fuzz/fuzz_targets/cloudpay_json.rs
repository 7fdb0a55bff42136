//! Fuzzes the cloud-pay callback body (gateway/src/cloudpay.rs). The gateway's
//! own parse (`serde_json::from_slice::<Callback>`) is private and runs inside
//! `process`, which needs the whole `AppState` (store, ledger, Redis), so this
//! target fuzzes what that parse is made of: `serde_json::from_slice` of the
//! raw body into a `Value`, then the callback's fields read the way its
//! `Callback`/`Amount` types read them, through the wxpay-core parsers:
//! - the body parses or is refused without panicking, and a parsed body
//!   re-serialises to JSON that parses to the same value (floats to within
//!   1e-12: serde_json's default float parsing is not correctly rounded);
//! - `totalFee`/`cashFee`: a JSON integer goes to `Fee::new` (total) or must be
//!   ≥ 0 (cash); a decimal string to `Fee::parse_wire` / `i64` parse; a
//!   fractional or out-of-i64 number is never money; each result is checked
//!   against the exact oracles in `wxpay_fuzz`;
//! - `timeEnd` goes through `china_time::parse` and must round-trip;
//! - `outTradeNo`/`transactionId` go through the id parsers' oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wxpay_core::domain::Fee;
use wxpay_fuzz::{check_china_time, check_fee_new, check_fee_wire, check_ids};

/// The gateway's `Amount` (untagged `Fen(i64)` | `Text(String)`): `None` when the
/// value is neither, which makes the gateway refuse the whole body.
fn amount(v: &Value) -> Option<Result<i64, String>> {
    match v {
        Value::Number(n) => n.as_i64().map(Ok),
        Value::String(s) => Some(Err(s.clone())),
        _ => None,
    }
}

fn check_amount(v: &Value) {
    if let Value::Number(n) = v {
        if n.is_f64() || (n.is_u64() && n.as_i64().is_none()) {
            assert!(amount(v).is_none(), "{n} read as money");
        }
    }
    match amount(v) {
        Some(Ok(fen)) => {
            check_fee_new(fen);
            // cash_fee: any non-negative integer (coupons may pay it all).
            let cash = Some(fen).filter(|f| *f >= 0);
            assert_eq!(cash.is_some(), fen >= 0);
        }
        Some(Err(s)) => {
            check_fee_wire(&s);
            let cash = s.parse::<i64>().ok().filter(|f| *f >= 0);
            if let (Some(c), Ok(fee)) = (cash, Fee::parse_wire("totalFee", &s)) {
                assert_eq!(c, fee.fen());
            }
        }
        None => {}
    }
}

/// Structural equality, except that floats (never money here) may differ in the
/// last bits: serde_json's default float parser is not correctly rounded
/// (that is its `float_roundtrip` feature, which the gateway does not enable).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-12
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let again = serde_json::to_vec(&value).expect("a Value always serialises");
    let back = serde_json::from_slice::<Value>(&again).expect("its own output parses");
    assert!(
        same(&value, &back),
        "JSON did not round-trip: {value} vs {back}"
    );
    let Value::Object(map) = &value else {
        return;
    };
    for k in ["totalFee", "cashFee"] {
        if let Some(v) = map.get(k) {
            check_amount(v);
        }
    }
    if let Some(Value::String(t)) = map.get("timeEnd") {
        check_china_time(t);
    }
    for k in [
        "outTradeNo",
        "transactionId",
        "subMchId",
        "returnCode",
        "resultCode",
    ] {
        if let Some(Value::String(s)) = map.get(k) {
            check_ids(s);
        }
    }
    // Values anywhere in the body exercise the parsers on fuzzer-chosen text.
    for v in map.values() {
        match v {
            Value::String(s) => {
                check_fee_wire(s);
                check_china_time(s);
            }
            Value::Number(_) => check_amount(v),
            _ => {}
        }
    }
});
