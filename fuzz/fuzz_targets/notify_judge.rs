//! Fuzzes the pure part of the gateway's payment-notification judge
//! (gateway/src/notify.rs, mirrored store-free in `wxpay_fuzz::judge`):
//! XML decode → `sign` present → the merchant its mch_id/sub_mch_id name →
//! sign type (the message's `sign_type`, else
//! the signature's length: 32 MD5, 64 HMAC-SHA256) → `sign::verify` →
//! return_code, appid, out_trade_no, result_code, transaction_id,
//! `Fee::parse_wire(total_fee)`, cash_fee, `china_time::parse(time_end)` → the
//! order's recorded sign type (which must not matter).
//!
//! Checks, for every input body:
//! - the raw body is judged without panicking, and is judged authentic only
//!   if `sign::verify` accepts it under the sign type the gateway picks before
//!   any database read;
//! - re-signed with the official test key (under its own `sign_type`, or, when
//!   it names none, under MD5 or HMAC-SHA256 as the input picks), it is judged
//!   authentic if it names the configured merchant and refused unheard
//!   (BadSignature) if it names any other, and `sign::verify` refuses it under the other algorithm, under
//!   another key, with any single hex digit of `sign` changed, lowercased,
//!   truncated, extended, emptied or removed, with any signed value changed,
//!   or with a field added (an empty one is, by the specification, not signed
//!   and so still accepted); the judge refuses it with a `sign` of the wrong
//!   length or with `sign` removed;
//! - `sign::verify_any` accepts exactly under the algorithm the message names
//!   or its signature's length tells; a message signed unlike its order was
//!   placed gets the same verdict as one signed like it (issue 25: either of
//!   the merchant's algorithms proves it);
//! - the re-signed map survives encode → decode with its signature, and the
//!   judge reaches the same verdict from the wire bytes as from the map;
//! - what the judge extracts is what the oracles allow: a total_fee in
//!   1..=i32::MAX printed as sent, cash_fee ≥ 0, a time_end that round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::{sign, xml, Fields, SignType};
use wxpay_fuzz::{
    check_signature_properties, check_value, decoder_refuses_value, judge, judge_fields, key,
    message_sign_type, names_our_merchant, pairs, Judged,
};

fn other(st: SignType) -> SignType {
    match st {
        SignType::Md5 => SignType::HmacSha256,
        SignType::HmacSha256 => SignType::Md5,
    }
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let verdict = judge(data, &key, None);
    if let Ok(fields) = xml::decode(data) {
        // The gateway's one check (wxpay-core's verify_any) is exactly: the
        // algorithm the message names or its signature's length tells, verified.
        let by_hand = message_sign_type(&fields)
            .filter(|st| sign::verify(&fields, &key, *st).is_ok());
        assert_eq!(sign::verify_any(&fields, &key).ok(), by_hand);
    }
    if verdict.authentic() {
        let fields = xml::decode(data).expect("judged authentic, so it decoded");
        let st = message_sign_type(&fields).expect("authentic, so a sign type");
        assert_eq!(sign::verify(&fields, &key, st), Ok(()));
    }
    check_extracted(&verdict);

    let Ok(mut fields) = xml::decode(data) else {
        return;
    };
    for v in fields.values() {
        check_value(v);
    }
    let pick = data
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize));
    let typed = fields.contains_key("sign_type");
    let st = match fields.get("sign_type").map(|s| s.parse::<SignType>()) {
        None if pick % 2 == 0 => SignType::Md5,
        None => SignType::HmacSha256,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            // An unknown sign_type is refused whatever the signature says.
            sign::sign_fields(&mut fields, &key, SignType::Md5);
            assert_eq!(judge_fields(&fields, &key, None), Judged::BadSignature);
            return;
        }
    };
    fields.remove("sign");
    let signature = sign::sign(fields.iter(), &key, st);
    fields.insert("sign".into(), signature);
    let signed = fields;
    check_signature_properties(&signed, &key, st, pick);

    let verdict = judge_fields(&signed, &key, None);
    if !names_our_merchant(&signed) {
        // No configured key could prove it, whoever signed it.
        assert_eq!(verdict, Judged::BadSignature, "an unknown merchant's message was heard");
        return;
    }
    assert!(
        verdict.authentic(),
        "a correctly signed message was refused: {verdict:?}"
    );
    check_extracted(&verdict);
    assert_eq!(judge_fields(&signed, &key, Some(st)), verdict);
    // Signed unlike its order was placed, it is as authentic (issue 25).
    assert_eq!(
        judge_fields(&signed, &key, Some(other(st))),
        verdict,
        "the order's sign type changed the verdict"
    );
    if !typed {
        // Without sign_type the length of `sign` picks the algorithm.
        let mut bad: Fields = signed.clone();
        let s = bad.get_mut("sign").expect("signed");
        s.pop();
        assert_eq!(judge_fields(&bad, &key, None), Judged::BadSignature);
        bad.remove("sign");
        assert_eq!(judge_fields(&bad, &key, None), Judged::BadSignature);
    }

    if let Ok(wire) = xml::encode(pairs(&signed)) {
        if wire.len() <= xml::MAX_XML_BYTES {
            let expected = if decoder_refuses_value(&signed) {
                Judged::Malformed // known finding 1
            } else {
                verdict
            };
            assert_eq!(judge(wire.as_bytes(), &key, None), expected, "{wire:?}");
        }
    }
});

fn check_extracted(verdict: &Judged) {
    let fee_ok = |f: &Option<i64>| f.is_none_or(|f| (1..=i32::MAX as i64).contains(&f));
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
            assert!(fee_ok(total_fee));
            assert!(paid_at.as_ref().is_none_or(|t| t.len() == 14));
        }
        Judged::Failed { total_fee, .. } => assert!(fee_ok(total_fee)),
        _ => {}
    }
}
