//! Fuzzes the cloud-pay forwarder's proof (`wxpay_core::wechat::cloudpay`,
//! what gateway/src/proof.rs `cloudpay` runs before anything else): the
//! `X-Cloudpay-Timestamp` header, the `X-Cloudpay-Signature` header and the
//! body, at a clock the input picks. The input is `timestamp\0signature\0body`
//! (missing parts: header absent), the first two bytes pick the clock's offset
//! from the timestamp. Checks:
//! - `verify` never panics, and accepts exactly when the timestamp is 1..=12
//!   ASCII digits within 300 s of the clock and the signature is the hex
//!   HMAC-SHA256 of `timestamp\n body` under the secret (either case);
//! - what `sign` makes verifies at any clock within the window, and not one
//!   second outside it; under another secret, with the body or timestamp
//!   changed by one byte, or with the signature cut short, it does not.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use wxpay_core::wechat::cloudpay::{parse_timestamp, sign, verify, ForwarderError, WINDOW_SECONDS};

const SECRET: &[u8] = b"fuzz-cloudpay-secret-0123456789ab";
const OTHER: &[u8] = b"fuzz-cloudpay-secret-0123456789ac";

fn oracle(ts: &str, sig: &str, body: &[u8]) -> bool {
    let Ok(given) = hex::decode(sig.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any length");
    mac.update(ts.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac.finalize().into_bytes().as_slice() == given.as_slice()
}

fuzz_target!(|data: &[u8]| {
    let Some((offset, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let offset = i16::from_le_bytes(*offset) as i64;
    let mut parts = rest.splitn(3, |b| *b == 0);
    let ts = parts.next().map(String::from_utf8_lossy);
    let sig = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let ts = ts.as_deref();
    let sig = sig.as_deref();

    let at = ts.map(str::trim).and_then(parse_timestamp);
    let now = at.unwrap_or(1_780_000_000).saturating_add(offset);
    let got = verify(SECRET, ts, sig, body, now);
    let expected = match at {
        None => Err(ForwarderError::BadTimestamp),
        Some(at) if at.abs_diff(now) > WINDOW_SECONDS as u64 => Err(ForwarderError::Stale),
        Some(at) => match sig {
            Some(sig) if oracle(ts.expect("parsed").trim(), sig, body) => Ok(at),
            _ => Err(ForwarderError::BadSignature),
        },
    };
    assert_eq!(got, expected, "ts {ts:?} sig {sig:?} now {now}");
    if let Some(at) = at {
        assert!(at >= 0 && ts.is_some_and(|t| t.trim().len() <= 12));
    }

    // A signature made now, at the input's body and a timestamp in range.
    let t = 1_780_000_000i64 + (offset.rem_euclid(1000));
    let ts = t.to_string();
    let signed = sign(SECRET, &ts, body);
    for clock in [t, t - WINDOW_SECONDS, t + WINDOW_SECONDS, t + offset.clamp(-300, 300)] {
        assert_eq!(verify(SECRET, Some(&ts), Some(&signed), body, clock), Ok(t));
    }
    assert_eq!(
        verify(SECRET, Some(&ts), Some(&signed.to_uppercase()), body, t),
        Ok(t)
    );
    for clock in [t - WINDOW_SECONDS - 1, t + WINDOW_SECONDS + 1] {
        assert_eq!(
            verify(SECRET, Some(&ts), Some(&signed), body, clock),
            Err(ForwarderError::Stale)
        );
    }
    assert_eq!(
        verify(OTHER, Some(&ts), Some(&signed), body, t),
        Err(ForwarderError::BadSignature)
    );
    let mut changed = body.to_vec();
    match changed.first_mut() {
        Some(b) => *b ^= 1,
        None => changed.push(b'x'),
    }
    assert_eq!(
        verify(SECRET, Some(&ts), Some(&signed), &changed, t),
        Err(ForwarderError::BadSignature)
    );
    let next = (t + 1).to_string();
    assert_eq!(
        verify(SECRET, Some(&next), Some(&signed), body, t),
        Err(ForwarderError::BadSignature)
    );
    assert_eq!(
        verify(SECRET, Some(&ts), Some(&signed[..signed.len() - 2]), body, t),
        Err(ForwarderError::BadSignature)
    );
});
