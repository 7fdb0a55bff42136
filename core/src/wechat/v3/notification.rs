//! Opening a v3 notification, in the only safe order: the signature over the
//! raw body first ([`super::verify`]: headers, 5-minute window, probes refused
//! before any key is looked up), then the envelope's JSON, then the sealed
//! `resource`. A v3 envelope does not say whose it is, so the caller offers
//! every merchant that could have received it ([`Candidate`]): those whose
//! WeChat keys know `Wechatpay-Serial` and verify the signature are the ones
//! the sender could be talking to, and those among them whose APIv3 key opens
//! the resource are the ones it was sealed for (AES-256-GCM authenticates, so
//! a wrong key fails rather than yielding garbage). Who the opened resource
//! says it is for is the caller's to check (its `mchid` or `sp_mchid` and
//! `sub_mchid`): merchants of one service provider share its APIv3 key.
//!
//! Pure (no I/O, `now` given), so the gateway and the fuzz targets run the
//! same code.

use chrono::{DateTime, Utc};

use super::{
    aead::DecryptError,
    models::Notification,
    verify::{self, SignedHeaders, VerifyError},
    Apiv3Key, WechatKey, WechatKeys,
};

/// One merchant that may have received a notification: who it is (`id`,
/// whatever the caller names merchants by), the WeChat keys it accepts
/// signatures from, and its APIv3 key.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a, T> {
    pub id: T,
    pub keys: &'a WechatKeys,
    pub apiv3_key: &'a Apiv3Key,
}

/// Why a notification was not opened. Each says no more than the step that
/// failed: nothing of the body, nothing of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The headers or the signature (including a probe, a stale timestamp
    /// and a serial no candidate knows).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Signed, but not a notification envelope.
    #[error("the body is not a v3 notification")]
    Envelope,
    /// Signed, but the resource opens under no candidate's APIv3 key (or is
    /// not AES-256-GCM, or its nonce or base64 is not well formed).
    #[error("the resource: {0}")]
    Resource(DecryptError),
}

/// A notification whose signature verified and whose resource opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<T> {
    pub notification: Notification,
    /// The decrypted resource (JSON, as the sender wrote it).
    pub plaintext: Vec<u8>,
    /// Every candidate whose key verified the signature and whose APIv3 key
    /// opened the resource, in the order offered (more than one only when
    /// they share an APIv3 key, as a service provider's sub-merchants do).
    pub openers: Vec<T>,
}

/// Verifies `body` (the raw bytes received) against `headers` under the
/// candidates' WeChat keys, then parses the envelope and opens its resource.
pub fn open<'a, T: Clone>(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
    candidates: &[Candidate<'a, T>],
) -> Result<Opened<T>, OpenError> {
    let serial = verify::precheck(headers, now)?;
    let verified = verified(headers, body, now, serial, candidates)?;
    let notification: Notification =
        serde_json::from_slice(body).map_err(|_| OpenError::Envelope)?;
    let mut plaintext = None;
    let mut openers = Vec::new();
    let mut last = DecryptError::Open;
    for c in verified {
        match notification.resource.decrypt(c.apiv3_key) {
            Ok(plain) => {
                // Candidates sharing a key open the same bytes; keep the first.
                plaintext.get_or_insert(plain);
                openers.push(c.id.clone());
            }
            // The envelope's own fault, whatever the key: no candidate can do better.
            Err(e @ (DecryptError::Algorithm | DecryptError::Nonce | DecryptError::Base64)) => {
                return Err(OpenError::Resource(e))
            }
            Err(e) => last = e,
        }
    }
    match plaintext {
        Some(plaintext) => Ok(Opened {
            notification,
            plaintext,
            openers,
        }),
        None => Err(OpenError::Resource(last)),
    }
}

/// The candidates whose key named `serial` verifies the signature. Each
/// distinct key is checked once: merchants of one provider, or one merchant
/// listed twice, share WeChat's key, and an RSA verification is the costly step.
fn verified<'c, 'a, T>(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
    serial: &str,
    candidates: &'c [Candidate<'a, T>],
) -> Result<Vec<&'c Candidate<'a, T>>, VerifyError> {
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (headers.timestamp, headers.nonce, headers.signature)
    else {
        // precheck saw all three.
        return Err(VerifyError::Missing("Wechatpay-Signature"));
    };
    let message = verify::message(timestamp.trim(), nonce, body);
    let mut checked: Vec<(&WechatKey, bool)> = Vec::new();
    let mut known = false;
    let mut out = Vec::new();
    for c in candidates {
        let Some(key) = c.keys.get(serial, now) else {
            continue;
        };
        known = true;
        let ok = match checked.iter().find(|(k, _)| *k == key) {
            Some((_, ok)) => *ok,
            None => {
                let ok = key.verifies(&message, signature);
                checked.push((key, ok));
                ok
            }
        };
        if ok {
            out.push(c);
        }
    }
    match (known, out.is_empty()) {
        (false, _) => Err(VerifyError::UnknownSerial(
            serial.chars().take(64).collect(),
        )),
        (true, true) => Err(VerifyError::BadSignature),
        (true, false) => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::v3::{models::EncryptedResource, MerchantSigner};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/v3/");
    const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{DIR}{name}")).expect("test vector")
    }

    fn apiv3(s: &str) -> Apiv3Key {
        Apiv3Key::parse(s).expect("32 bytes")
    }

    /// WeChat's side: the platform key signs what the certificate verifies.
    fn wechat() -> MerchantSigner {
        MerchantSigner::from_pem(read("platform_key.pem").as_bytes(), SERIAL).expect("key")
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn sealed_body(key: &Apiv3Key) -> Vec<u8> {
        let resource =
            EncryptedResource::seal(key, "fdasflkja484", "transaction", "transaction", b"{}")
                .expect("seals");
        serde_json::to_vec(&Notification {
            id: "EV-1".into(),
            create_time: "2026-12-07T10:00:00+08:00".into(),
            event_type: "TRANSACTION.SUCCESS".into(),
            resource_type: "encrypt-resource".into(),
            summary: "支付成功".into(),
            resource,
        })
        .expect("json")
    }

    fn sign(body: &[u8], ts: &str) -> String {
        wechat()
            .sign(&verify::message(ts, "nonce-1", body))
            .expect("signs")
    }

    fn headers<'a>(ts: &'a str, signature: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            serial: Some(SERIAL),
            signature: Some(signature),
            timestamp: Some(ts),
            nonce: Some("nonce-1"),
            signature_type: Some(super::super::SCHEME),
        }
    }

    #[test]
    fn the_merchant_whose_apiv3_key_opens_a_verified_notification_is_its_opener() {
        let keys = WechatKeys::new(vec![WechatKey::from_certificate_pem(&read(
            "platform_cert.pem",
        ))
        .expect("cert")]);
        let none = WechatKeys::default();
        let (a, b) = (
            apiv3("0123456789abcdefABCDEFGHijklmnop"),
            apiv3("0123456789abcdefABCDEFGHijklmnoq"),
        );
        let candidates = [
            Candidate {
                id: "no-keys",
                keys: &none,
                apiv3_key: &a,
            },
            Candidate {
                id: "a",
                keys: &keys,
                apiv3_key: &a,
            },
            Candidate {
                id: "b",
                keys: &keys,
                apiv3_key: &b,
            },
        ];
        let body = sealed_body(&b);
        let ts = now().timestamp().to_string();
        let sig = sign(&body, &ts);
        let opened = open(&headers(&ts, &sig), &body, now(), &candidates).expect("opens");
        assert_eq!(opened.openers, ["b"]);
        assert_eq!(opened.plaintext, b"{}");
        assert_eq!(opened.notification.event_type, "TRANSACTION.SUCCESS");
        // A provider's sub-merchants share its APIv3 key: each is an opener,
        // and whose it is is for the caller to read from the resource.
        let shared = [
            Candidate {
                id: "sub-1",
                keys: &keys,
                apiv3_key: &b,
            },
            Candidate {
                id: "sub-2",
                keys: &keys,
                apiv3_key: &b,
            },
        ];
        let opened = open(&headers(&ts, &sig), &body, now(), &shared).expect("opens");
        assert_eq!(opened.openers, ["sub-1", "sub-2"]);

        // One byte changed: the signature, not the JSON, refuses it.
        let mut tampered = body.clone();
        tampered[2] ^= 1;
        assert_eq!(
            open(&headers(&ts, &sig), &tampered, now(), &candidates),
            Err(OpenError::Verify(VerifyError::BadSignature))
        );
        // Sealed under a key no candidate holds.
        let foreign = sealed_body(&apiv3("ffffffffffffffffffffffffffffffff"));
        let sig = sign(&foreign, &ts);
        assert_eq!(
            open(&headers(&ts, &sig), &foreign, now(), &candidates),
            Err(OpenError::Resource(DecryptError::Open))
        );
        // Signed, but not an envelope.
        let sig = sign(b"[]", &ts);
        assert_eq!(
            open(&headers(&ts, &sig), b"[]", now(), &candidates),
            Err(OpenError::Envelope)
        );
        // No candidate knows the serial.
        assert!(matches!(
            open(&headers(&ts, &sig), b"[]", now(), &candidates[..1]),
            Err(OpenError::Verify(VerifyError::UnknownSerial(_)))
        ));
        // A probe is refused before any key.
        assert_eq!(
            open(
                &headers(&ts, "WECHATPAY/SIGNTEST/x"),
                &body,
                now(),
                &candidates
            ),
            Err(OpenError::Verify(VerifyError::Probe))
        );
    }
}
