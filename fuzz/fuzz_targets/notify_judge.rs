//! Fuzzes the pure part of the gateway's payment-notification judge
//! (gateway/src/notify.rs, mirrored store-free in `wxpay_fuzz::judge`):
//! XML decode → `sign` present → sign type (message's, else the order's) →
//! `sign::verify` → return_code, appid/mch_id, out_trade_no, result_code,
//! transaction_id, `Fee::parse_wire(total_fee)`, cash_fee, `china_time::parse(time_end)`.
//!
//! Checks, for every input body:
//! - the raw body is judged without panicking, and is judged authentic only
//!   if `sign::verify` accepts it under the sign type the gateway would use;
//! - re-signed with the official test key under the message's own sign type
//!   (MD5 when it names none), it verifies, and is refused under the other
//!   algorithm, under another key, with any single hex digit of `sign`
//!   changed, lowercased, truncated, extended, emptied or removed, with any
//!   signed value changed, or with a field added (an empty one is, by the
//!   specification, not signed and so still accepted);
//! - the re-signed map survives encode → decode with its signature, and the
//!   judge reaches the same verdict from the wire bytes as from the map;
//! - a message without `sign_type` is refused when the order's algorithm is
//!   the other one;
//! - what the judge extracts is what the oracles allow: a total_fee in
//!   1..=i32::MAX printed as sent, cash_fee ≥ 0, a time_end that round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::{sign, xml, SignType};
use wxpay_fuzz::{
    check_signature_properties, check_value, decoder_refuses_value, judge, judge_fields, key,
    pairs, Judged,
};

fuzz_target!(|data: &[u8]| {
    let key = key();
    for order_st in [SignType::Md5, SignType::HmacSha256] {
        let verdict = judge(data, &key, order_st);
        if verdict.authentic() {
            let fields = xml::decode(data).expect("judged authentic, so it decoded");
            let st = fields.get("sign_type").map_or(order_st, |s| {
                s.parse().expect("authentic, so a known sign_type")
            });
            assert_eq!(sign::verify(&fields, &key, st), Ok(()));
        }
        check_extracted(&verdict);
    }

    let Ok(mut fields) = xml::decode(data) else {
        return;
    };
    for v in fields.values() {
        check_value(v);
    }
    let st = match fields.get("sign_type").map(|s| s.parse::<SignType>()) {
        None => SignType::Md5,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            // An unknown sign_type is refused whatever the signature says.
            sign::sign_fields(&mut fields, &key, SignType::Md5);
            assert_eq!(
                judge_fields(&fields, &key, SignType::Md5),
                Judged::BadSignature
            );
            return;
        }
    };
    let had_sign_type = fields.contains_key("sign_type");
    sign::sign_fields(&mut fields, &key, st);
    let signed = fields;
    let pick = data
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize));
    check_signature_properties(&signed, &key, st, pick);

    let verdict = judge_fields(&signed, &key, st);
    assert!(
        verdict.authentic(),
        "a correctly signed message was refused: {verdict:?}"
    );
    check_extracted(&verdict);
    if !had_sign_type && st == SignType::Md5 {
        // No sign_type in the message: the order's algorithm decides, and an
        // MD5 signature does not pass for an HMAC-SHA256 order.
        assert_eq!(
            judge_fields(&signed, &key, SignType::HmacSha256),
            Judged::BadSignature
        );
    }
    if let Ok(wire) = xml::encode(pairs(&signed)) {
        if wire.len() <= xml::MAX_XML_BYTES {
            let expected = if decoder_refuses_value(&signed) {
                Judged::Malformed // known finding 1
            } else {
                verdict
            };
            assert_eq!(judge(wire.as_bytes(), &key, st), expected, "{wire:?}");
        }
    }
});

fn check_extracted(verdict: &Judged) {
    match verdict {
        Judged::Paid {
            transaction_id,
            cash_fee,
            paid_at,
            total_fee,
            out_trade_no,
            ..
        } => {
            assert!(!transaction_id.is_empty() && transaction_id.len() <= 32);
            assert!(!out_trade_no.is_empty() && out_trade_no.len() <= 32);
            assert!(cash_fee.is_none_or(|c| c >= 0));
            assert!(total_fee.is_none_or(|f| (1..=i32::MAX as i64).contains(&f)));
            assert!(paid_at.as_ref().is_none_or(|t| t.len() == 14));
        }
        Judged::Failed { total_fee, .. } => {
            assert!(total_fee.is_none_or(|f| (1..=i32::MAX as i64).contains(&f)));
        }
        _ => {}
    }
}
