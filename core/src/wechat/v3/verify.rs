//! Believing WeChat: a v3 response or notification is authentic when
//! `Wechatpay-Signature` is the RSA-SHA256, under the key `Wechatpay-Serial`
//! names, of `TIMESTAMP\nNONCE\nBODY\n` over the body's raw bytes as received
//! (never a re-serialized body: the cause of peers' verification failures),
//! with the timestamp less than 5 minutes from our clock. WeChat's
//! `WECHATPAY/SIGNTEST/` probes, which check that merchants verify, are
//! refused before any key is looked up (so a probe never triggers a
//! certificate download).

use chrono::{DateTime, Utc};

use super::{WechatKeys, MAX_CLOCK_SKEW_SECONDS, SCHEME};

/// The four (five) headers WeChat signs with, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    pub serial: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// `Wechatpay-Signature-Type`; absent is taken as the only scheme.
    pub signature_type: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// Reads the headers by name through `get` (any header map).
    pub fn from_fn(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            serial: get("wechatpay-serial"),
            signature: get("wechatpay-signature"),
            timestamp: get("wechatpay-timestamp"),
            nonce: get("wechatpay-nonce"),
            signature_type: get("wechatpay-signature-type"),
        }
    }
}

/// Why a message was not believed. `UnknownSerial` is the one a caller may
/// act on: refresh its keys (rate-limited) and verify once more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the signature type is not WECHATPAY2-SHA256-RSA2048")]
    SignatureType,
    #[error("a WECHATPAY/SIGNTEST/ probe (WeChat checking that we verify)")]
    Probe,
    #[error("the timestamp is not a number of seconds")]
    Timestamp,
    #[error("the timestamp is {0} s from our clock (5 minutes at most)")]
    Stale(i64),
    #[error("no usable key has serial {0}")]
    UnknownSerial(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// The string WeChat's signature covers.
pub fn message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// Checks everything but the key: headers present, scheme, not a probe,
/// timestamp within the window. Returns the serial to look up.
pub fn precheck<'a>(
    headers: &SignedHeaders<'a>,
    now: DateTime<Utc>,
) -> Result<&'a str, VerifyError> {
    let serial = headers
        .serial
        .ok_or(VerifyError::Missing("Wechatpay-Serial"))?;
    let signature = headers
        .signature
        .ok_or(VerifyError::Missing("Wechatpay-Signature"))?;
    let timestamp = headers
        .timestamp
        .ok_or(VerifyError::Missing("Wechatpay-Timestamp"))?;
    headers
        .nonce
        .ok_or(VerifyError::Missing("Wechatpay-Nonce"))?;
    if headers.signature_type.is_some_and(|t| t != SCHEME) {
        return Err(VerifyError::SignatureType);
    }
    if signature.starts_with("WECHATPAY/SIGNTEST/") {
        return Err(VerifyError::Probe);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Timestamp)?;
    let skew = now.timestamp().saturating_sub(ts);
    if skew.saturating_abs() >= MAX_CLOCK_SKEW_SECONDS {
        return Err(VerifyError::Stale(skew));
    }
    Ok(serial)
}

/// Verifies `body` (the raw bytes received) against `headers` with `keys`.
pub fn verify(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    keys: &WechatKeys,
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let serial = precheck(headers, now)?;
    let key = keys
        .get(serial, now)
        .ok_or_else(|| VerifyError::UnknownSerial(serial.chars().take(64).collect()))?;
    // precheck saw both present.
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (headers.timestamp, headers.nonce, headers.signature)
    else {
        return Err(VerifyError::Missing("Wechatpay-Signature"));
    };
    if key.verifies(&message(timestamp.trim(), nonce, body), signature) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
