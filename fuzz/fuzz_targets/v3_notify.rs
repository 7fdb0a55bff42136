//! Fuzzes the v3 payment notification's parser and decryption as the gateway
//! runs them before it trusts anything (gateway/src/proof.rs `v3`):
//! `wxpay_core::wechat::v3::notification::open` (the headers and the RSA
//! signature over the raw body, then the envelope's JSON, then the resource's
//! AES-256-GCM under each candidate merchant's APIv3 key), then what the
//! gateway reads from the opened resource (the `Transaction` JSON, its
//! amounts, ids and time). The first input byte picks the mode:
//! - `0`: `serial\0signature\0timestamp\0nonce\0body` as received: nothing
//!   panics, and a message is opened only if `verify::verify` accepts it
//!   under the same keys (no path around the signature);
//! - `1`: the rest is a body this target signs as WeChat does, now: it is
//!   never refused for its signature; it is refused as not an envelope
//!   exactly when it is not `Notification` JSON; what opens is exactly what
//!   the resource decrypts to under the one candidate key that opens it; and
//!   the same body with any one byte changed, signed 5 minutes ago, sent as
//!   WeChat's probe or under an unknown serial is refused for that;
//! - `2`: the rest is a resource plaintext this target seals (under one of two
//!   merchants' APIv3 keys, as the second byte picks) into an envelope and
//!   signs: it opens to exactly those bytes, for exactly that merchant; one
//!   flipped ciphertext byte (re-signed) or a third key does not open; and
//!   a `Transaction` read from it passes the amount, id and time oracles, and
//!   so does a `RefundResource` (what the refund endpoint,
//!   gateway/src/refund_v3.rs, reads behind the same proof), whose
//!   `refund_status` maps to ours only as one of v3's four and agrees with
//!   the `REFUND.*` event of the same state.
#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Utc};
use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::{
    china_time,
    v3::{
        models::{
            refund_event_status, refund_status, EncryptedResource, Notification, RefundResource,
            Transaction,
        },
        notification::{open, Candidate, OpenError},
        verify::{self, SignedHeaders, VerifyError},
        Apiv3Key, DecryptError, MerchantSigner, WechatKey, WechatKeys, SCHEME,
    },
};
use wxpay_fuzz::{check_fee_new, check_ids, check_value};

/// Parsed once: an RSA private key's checks cost more than a run.
static SETUP: OnceLock<Setup> = OnceLock::new();

const PLATFORM_KEY: &[u8] = include_bytes!("../../core/tests/testdata/v3/platform_key.pem");
const PLATFORM_CERT: &str = include_str!("../../core/tests/testdata/v3/platform_cert.pem");
const PUB_KEY: &[u8] = include_bytes!("../../core/tests/testdata/v3/merchant_pub.pem");
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0119000003002025";
const KEY_A: &str = "0123456789abcdefABCDEFGHijklmnop";
const KEY_B: &str = "0123456789abcdefABCDEFGHijklmnoq";
const KEY_C: &str = "ffffffffffffffffffffffffffffffff";

struct Setup {
    signer: MerchantSigner,
    keys: WechatKeys,
    a: Apiv3Key,
    b: Apiv3Key,
    c: Apiv3Key,
    now: DateTime<Utc>,
}

fn setup() -> Setup {
    let cert = WechatKey::from_certificate_pem(PLATFORM_CERT).expect("test certificate");
    let public = WechatKey::from_public_key_pem(PUB_KEY_ID, PUB_KEY).expect("test public key");
    let (from, _) = cert.validity().expect("a certificate has dates");
    Setup {
        signer: MerchantSigner::from_pem(PLATFORM_KEY, SERIAL).expect("test key"),
        // Both modes at once, as while a merchant switches.
        keys: WechatKeys::new(vec![cert, public]),
        a: Apiv3Key::parse(KEY_A).expect("32 bytes"),
        b: Apiv3Key::parse(KEY_B).expect("32 bytes"),
        c: Apiv3Key::parse(KEY_C).expect("32 bytes"),
        // A fixed instant inside the certificate's dates: runs repeat exactly.
        now: from + chrono::Duration::days(1),
    }
}

impl Setup {
    fn candidates(&self) -> [Candidate<'_, char>; 2] {
        [
            Candidate {
                id: 'a',
                keys: &self.keys,
                apiv3_key: &self.a,
            },
            Candidate {
                id: 'b',
                keys: &self.keys,
                apiv3_key: &self.b,
            },
        ]
    }

    fn sign(&self, body: &[u8], timestamp: &str, nonce: &str) -> String {
        self.signer
            .sign(&verify::message(timestamp, nonce, body))
            .expect("signs")
    }

    fn open(&self, h: &SignedHeaders<'_>, body: &[u8]) -> Result<Opened, OpenError> {
        open(h, body, self.now, &self.candidates())
    }
}

type Opened = wxpay_core::wechat::v3::notification::Opened<char>;

fn headers<'a>(serial: &'a str, signature: &'a str, ts: &'a str) -> SignedHeaders<'a> {
    SignedHeaders {
        serial: Some(serial),
        signature: Some(signature),
        timestamp: Some(ts),
        nonce: Some("fuzz-nonce"),
        signature_type: Some(SCHEME),
    }
}

fn raw(s: &Setup, data: &[u8]) {
    let mut parts = data.splitn(5, |b| *b == 0);
    let mut next = || parts.next().map(String::from_utf8_lossy);
    let (serial, signature, ts, nonce) = (next(), next(), next(), next());
    let body = next()
        .map(|b| b.into_owned().into_bytes())
        .unwrap_or_default();
    let h = SignedHeaders {
        serial: serial.as_deref(),
        signature: signature.as_deref(),
        timestamp: ts.as_deref(),
        nonce: nonce.as_deref(),
        signature_type: Some(SCHEME),
    };
    if s.open(&h, &body).is_ok() {
        assert_eq!(
            verify::verify(&h, &body, &s.keys, s.now),
            Ok(()),
            "opened without a verifying signature"
        );
    }
}

fn signed(s: &Setup, body: &[u8], pick: usize) {
    let ts = s.now.timestamp().to_string();
    let sig = s.sign(body, &ts, "fuzz-nonce");
    let got = s.open(&headers(SERIAL, &sig, &ts), body);
    let envelope = serde_json::from_slice::<Notification>(body);
    match (&got, &envelope) {
        (Err(OpenError::Verify(e)), _) => panic!("a genuine signature was refused: {e:?}"),
        (Err(OpenError::Envelope), Ok(_)) => panic!("a notification was refused as not one"),
        (Ok(_) | Err(OpenError::Resource(_)), Err(_)) => panic!("not a notification, yet read"),
        _ => {}
    }
    if let (Ok(opened), Ok(n)) = (&got, &envelope) {
        let key = if opened.openers == ['a'] { &s.a } else { &s.b };
        assert!(
            opened.openers == ['a'] || opened.openers == ['b'],
            "two keys opened one resource: {:?}",
            opened.openers
        );
        assert_eq!(n.resource.decrypt(key).as_ref(), Ok(&opened.plaintext));
        check_transaction(&opened.plaintext);
        check_refund(&opened.plaintext);
    }
    if let (Err(OpenError::Resource(DecryptError::Open)), Ok(n)) = (&got, &envelope) {
        assert!(n.resource.decrypt(&s.a).is_err() && n.resource.decrypt(&s.b).is_err());
    }
    if body.is_empty() {
        return;
    }
    // One byte changed after signing: the signature, checked first, refuses it.
    let mut tampered = body.to_vec();
    let i = pick % tampered.len();
    tampered[i] = tampered[i].wrapping_add(1 + (pick % 255) as u8);
    assert_eq!(
        s.open(&headers(SERIAL, &sig, &ts), &tampered).err(),
        Some(OpenError::Verify(VerifyError::BadSignature))
    );
    let stale = (s.now.timestamp() - 300).to_string();
    let stale_sig = s.sign(body, &stale, "fuzz-nonce");
    assert!(matches!(
        s.open(&headers(SERIAL, &stale_sig, &stale), body),
        Err(OpenError::Verify(VerifyError::Stale(300)))
    ));
    let probe = format!("WECHATPAY/SIGNTEST/{sig}");
    assert_eq!(
        s.open(&headers(SERIAL, &probe, &ts), body).err(),
        Some(OpenError::Verify(VerifyError::Probe))
    );
    assert!(matches!(
        s.open(&headers("PUB_KEY_ID_0000", &sig, &ts), body),
        Err(OpenError::Verify(VerifyError::UnknownSerial(_)))
    ));
    // The public key is not the certificate: naming it does not verify.
    assert_eq!(
        s.open(&headers(PUB_KEY_ID, &sig, &ts), body).err(),
        Some(OpenError::Verify(VerifyError::BadSignature))
    );
}

fn envelope_of(resource: EncryptedResource) -> Vec<u8> {
    serde_json::to_vec(&Notification {
        id: "EV-fuzz".into(),
        create_time: "2026-12-07T10:00:00+08:00".into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        resource_type: "encrypt-resource".into(),
        summary: String::new(),
        resource,
    })
    .expect("json")
}

fn sealed(s: &Setup, data: &[u8]) {
    let Some((&which, plaintext)) = data.split_first() else {
        return;
    };
    let (key, id) = if which % 2 == 0 {
        (&s.a, 'a')
    } else {
        (&s.b, 'b')
    };
    // The AAD is the input's too (any string the envelope carries).
    let aad = if which & 2 == 0 { "transaction" } else { "" };
    let resource = EncryptedResource::seal(key, "fdasflkja484", aad, "transaction", plaintext)
        .expect("a 12-byte nonce seals");
    let ts = s.now.timestamp().to_string();
    let body = envelope_of(resource.clone());
    let sig = s.sign(&body, &ts, "fuzz-nonce");
    let opened = s
        .open(&headers(SERIAL, &sig, &ts), &body)
        .expect("a genuine, sealed notification opens");
    assert_eq!(opened.plaintext, plaintext);
    assert_eq!(opened.openers, [id]);
    check_transaction(plaintext);
    check_refund(plaintext);

    // Another merchant's key (not a candidate): refused, whatever it holds.
    let foreign = EncryptedResource::seal(&s.c, "fdasflkja484", aad, "transaction", plaintext)
        .expect("seals");
    let body = envelope_of(foreign);
    let sig = s.sign(&body, &ts, "fuzz-nonce");
    assert_eq!(
        s.open(&headers(SERIAL, &sig, &ts), &body).err(),
        Some(OpenError::Resource(DecryptError::Open))
    );
    // One bit of the ciphertext (or tag) flipped, and the body signed again.
    use base64::{engine::general_purpose::STANDARD, Engine};
    let mut bytes = STANDARD.decode(&resource.ciphertext).expect("base64");
    let i = usize::from(which) % bytes.len();
    bytes[i] ^= 1 << (which % 8);
    let mut flipped = resource;
    flipped.ciphertext = STANDARD.encode(bytes);
    let body = envelope_of(flipped);
    let sig = s.sign(&body, &ts, "fuzz-nonce");
    assert_eq!(
        s.open(&headers(SERIAL, &sig, &ts), &body).err(),
        Some(OpenError::Resource(DecryptError::Open))
    );
}

/// What the gateway reads from an opened payment resource
/// (gateway/src/notify_v3.rs `read`): the amount as a `Fee`, the ids through
/// their parsers, `success_time` as RFC 3339.
fn check_transaction(plaintext: &[u8]) {
    let Ok(t) = serde_json::from_slice::<Transaction>(plaintext) else {
        return;
    };
    check_value(&t.out_trade_no);
    for id in [
        &t.transaction_id,
        &t.appid,
        &t.mchid,
        &t.sub_mchid,
        &t.sp_mchid,
    ]
    .into_iter()
    .flatten()
    {
        check_ids(id);
    }
    if let Some(a) = &t.amount {
        check_fee_new(a.total);
    }
    check_success_time(t.success_time.as_deref());
}

/// What the gateway reads from an opened refund resource
/// (gateway/src/refund_v3.rs `read`): the ids through their parsers, both
/// amounts as a `Fee`, `success_time` as RFC 3339, and the status, which
/// maps to ours only for v3's four names and agrees with its event's.
fn check_refund(plaintext: &[u8]) {
    let Ok(r) = serde_json::from_slice::<RefundResource>(plaintext) else {
        return;
    };
    for id in [
        &r.out_trade_no,
        &r.out_refund_no,
        &r.transaction_id,
        &r.refund_id,
    ] {
        check_value(id);
    }
    for id in [&r.mchid, &r.sp_mchid, &r.sub_mchid].into_iter().flatten() {
        check_ids(id);
    }
    check_fee_new(r.amount.refund);
    check_fee_new(r.amount.total);
    let ours = refund_status(&r.refund_status);
    assert_eq!(
        ours.is_some(),
        ["PROCESSING", "SUCCESS", "ABNORMAL", "CLOSED"].contains(&r.refund_status.as_str()),
        "refund_status {:?}",
        r.refund_status
    );
    let event = format!("REFUND.{}", r.refund_status);
    if let Some(announced) = refund_event_status(&event) {
        assert_eq!(Some(announced), ours, "{event} disagrees with its state");
    }
    check_success_time(r.success_time.as_deref());
}

/// A v3 `success_time`, when it reads, is an instant that writes back as the
/// same second.
fn check_success_time(success_time: Option<&str>) {
    if let Some(time) = success_time.and_then(china_time::parse_rfc3339) {
        // What is read is an instant, and it writes back as the same second
        // (v3 writes whole seconds; years outside RFC 3339's four digits
        // after the shift to +08:00 have no form to write back in).
        if (1..=9998).contains(&time.year()) {
            let again = china_time::parse_rfc3339(&china_time::format_rfc3339(time));
            assert_eq!(
                again.map(|t| t.timestamp()),
                Some(time.timestamp()),
                "success_time must round-trip"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = SETUP.get_or_init(setup);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pick = rest
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize));
    match mode % 3 {
        0 => raw(s, rest),
        1 => signed(s, rest, pick),
        _ => sealed(s, rest),
    }
});
