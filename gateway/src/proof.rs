//! The one place an inbound message becomes proven. A [`Proven`] can only be
//! made here, by the verification step of its kind: the payment XML's
//! signature under the key of the merchant it names (MD5 or HMAC-SHA256,
//! whichever it uses), the refund XML's `req_info` decrypting under that
//! merchant's key, the cloud-pay callback's HMAC over its timestamp and body
//! within the replay window, and a v3 notification's RSA signature over its
//! raw body under WeChat's key, then its resource opening under the APIv3 key
//! of the merchant it names ([`v3`], the same for payment and refund results).
//! Everything that reads or writes the database for a message (keeping its
//! audit row, reading its order, applying it) takes a `Proven`, so a body
//! that did not pass cannot reach the store, and a new kind of notification
//! gets there only through a prover added to this module.
//!
//! A message that fails is a [`Refused`]: counted by reason, logged truncated
//! and rate-limited ([`crate::refusals`]), never stored. Nothing here touches
//! the database.

use std::sync::Arc;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use wxpay_core::{
    domain::MerchantName,
    wechat::{
        cloudpay as forwarder, refund_crypto, sign,
        v3::{
            self,
            notification::{self, Candidate, OpenError},
            DecryptError, SignedHeaders, VerifyError, WechatKeys,
        },
        xml, Fields, MerchantBook, MerchantEntry, SignType,
    },
};

use crate::{
    config::CloudpaySecret,
    notify::apps_match,
    refusals,
    verdict::{Judged, Kind, Verdict},
};

/// Who vouches for a proven message.
#[derive(Debug, Clone)]
pub enum Authority {
    /// Verified under this configured merchant's key.
    Merchant {
        entry: Box<MerchantEntry>,
        /// The entry's name as the domain type, parsed once here.
        name: MerchantName,
        /// How the message was proven to be this merchant's.
        proof: Proof,
    },
    /// The cloud-pay forwarder's HMAC: it proves the forwarder sent this body
    /// now, not which merchant was paid (the order says that).
    Forwarder,
}

/// How a merchant's message was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// v2: signed under the merchant's API key with this algorithm.
    Signed(SignType),
    /// v2 refund: `req_info` decrypted under the merchant's API key.
    Decrypted,
    /// v3: WeChat's `WECHATPAY2-SHA256-RSA2048` signature over the raw body,
    /// and the resource opened under the merchant's APIv3 key.
    V3,
}

/// A message that passed its kind's verification, with the raw body it came
/// in (what its audit row keeps). Its fields are private to this module: the
/// only way to get one is a prover below.
#[derive(Debug)]
pub struct Proven<T> {
    message: T,
    kind: Kind,
    authority: Authority,
    body: Bytes,
}

impl<T> Proven<T> {
    pub fn message(&self) -> &T {
        &self.message
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The raw body as received.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The configured merchant whose key proved it (`None` for the forwarder).
    pub fn merchant(&self) -> Option<&MerchantEntry> {
        match &self.authority {
            Authority::Merchant { entry, .. } => Some(entry),
            Authority::Forwarder => None,
        }
    }

    /// The v2 algorithm its signature verified under, when it was signed
    /// that way.
    pub fn sign_type(&self) -> Option<SignType> {
        match &self.authority {
            Authority::Merchant {
                proof: Proof::Signed(t),
                ..
            } => Some(*t),
            Authority::Merchant {
                proof: Proof::Decrypted | Proof::V3,
                ..
            }
            | Authority::Forwarder => None,
        }
    }

    /// How it was proven, for logs: the v2 algorithm, `req_info`, the v3
    /// scheme, or the forwarder's HMAC.
    pub fn proof_name(&self) -> &'static str {
        match &self.authority {
            Authority::Merchant { proof, .. } => match proof {
                Proof::Signed(t) => t.as_str(),
                Proof::Decrypted => "req_info",
                Proof::V3 => v3::SCHEME,
            },
            Authority::Forwarder => "forwarder-hmac",
        }
    }

    /// The same proof for what was read from the proven message (a typed
    /// report parsed from its fields): `read` sees only the message.
    pub fn read<U>(&self, read: impl FnOnce(&T) -> U) -> Proven<U> {
        Proven {
            message: read(&self.message),
            kind: self.kind,
            authority: self.authority.clone(),
            body: self.body.clone(),
        }
    }

    /// The verdict, counted under the merchant that proved the message.
    pub fn judged(&self, verdict: Verdict) -> Judged {
        Judged {
            verdict,
            merchant: self.merchant().map(|e| e.name.clone()),
        }
    }
}

impl<U> Proven<Option<U>> {
    /// The proven value, if what was read from the message holds one.
    pub fn transpose(self) -> Option<Proven<U>> {
        Some(Proven {
            message: self.message?,
            kind: self.kind,
            authority: self.authority,
            body: self.body,
        })
    }
}

/// A message that is not proven: why (a metric label), and what the sender hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub kind: Kind,
    pub reason: &'static str,
    pub verdict: Verdict,
}

impl Refused {
    fn new(kind: Kind, reason: &'static str, verdict: Verdict) -> Self {
        Self {
            kind,
            reason,
            verdict,
        }
    }

    /// Counts and logs the refusal (truncated, rate-limited) and writes
    /// nothing. Not counted under a merchant: the message only claims one.
    pub fn judged(self, body: &[u8]) -> Judged {
        refusals::refused(self.kind.as_str(), self.reason, body);
        Judged::anonymous(self.verdict)
    }
}

fn merchant_authority(entry: &MerchantEntry, proof: Proof) -> Option<Authority> {
    Some(Authority::Merchant {
        name: MerchantName::parse(&entry.name).ok()?,
        entry: Box::new(entry.clone()),
        proof,
    })
}

/// `POST /wechat/pay/notify`: signed under the key of the merchant its
/// `mch_id` (and `sub_mch_id`) name, with the algorithm it names or its
/// signature's length tells ([`sign::verify_any`]). Only that merchant's key:
/// a message signed by one merchant cannot pass for another's.
pub fn pay(merchants: &MerchantBook, body: &Bytes) -> Result<Proven<Fields>, Refused> {
    let refused = |reason: &'static str, verdict: Verdict| Refused::new(Kind::Pay, reason, verdict);
    let fields = xml::decode(body).map_err(|_| refused("malformed", Verdict::Malformed))?;
    let get = |k: &str| fields.get(k).map(String::as_str);
    if get("sign").is_none_or(str::is_empty) {
        return Err(refused("bad_signature", Verdict::BadSignature));
    }
    // No key here can verify a merchant we do not serve: as unproven as a bad
    // signature (or a forger could fill the database by inventing mch_ids).
    let entry = get("mch_id")
        .and_then(|m| merchants.for_message(m, get("sub_mch_id")))
        .ok_or(refused("unknown_merchant", Verdict::BadSignature))?;
    let sign_type = sign::verify_any(&fields, &entry.merchant.api_key)
        .map_err(|_| refused("bad_signature", Verdict::BadSignature))?;
    let authority = merchant_authority(entry, Proof::Signed(sign_type))
        .ok_or(refused("unknown_merchant", Verdict::BadSignature))?;
    Ok(Proven {
        message: fields,
        kind: Kind::Pay,
        authority,
        body: body.clone(),
    })
}

/// `POST /wechat/refund/notify`: the outer XML is unsigned; the proof is
/// `req_info`, which decrypts only under the key of the merchant the outer
/// `mch_id` (and `sub_mch_id`) name, and only for that merchant's appids.
/// Everything outside `req_info` is as unproven as a forged body, so each way
/// it can fail is a refusal. The message is the decrypted `req_info`.
pub fn refund(merchants: &MerchantBook, body: &Bytes) -> Result<Proven<Fields>, Refused> {
    let refused =
        |reason: &'static str, verdict: Verdict| Refused::new(Kind::Refund, reason, verdict);
    let outer = xml::decode(body).map_err(|_| refused("malformed", Verdict::Malformed))?;
    let get = |k: &str| outer.get(k).map(String::as_str);
    if get("return_code") != Some("SUCCESS") {
        // A FAIL carries no req_info: nothing in it can be told from a forgery.
        return Err(refused("no_result", Verdict::Invalid));
    }
    let entry = get("mch_id")
        .and_then(|m| merchants.for_message(m, get("sub_mch_id")))
        .ok_or(refused("unknown_merchant", Verdict::WrongMerchant))?;
    if !apps_match(entry, get("appid"), get("sub_appid")) {
        return Err(refused("wrong_app", Verdict::WrongMerchant));
    }
    let req_info = get("req_info").ok_or(refused("no_req_info", Verdict::Invalid))?;
    let inner = refund_crypto::decrypt_req_info(req_info, &entry.merchant.api_key)
        .map_err(|_| refused("bad_signature", Verdict::BadSignature))?;
    let authority = merchant_authority(entry, Proof::Decrypted)
        .ok_or(refused("unknown_merchant", Verdict::WrongMerchant))?;
    Ok(Proven {
        message: inner,
        kind: Kind::Refund,
        authority,
        body: body.clone(),
    })
}

/// WeChat's cloud-pay callback fields the gateway reads (camelCase, as the
/// forwarder relays them); the rest are ignored (the HMAC covers them all).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    pub return_code: Option<String>,
    pub result_code: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
    pub total_fee: Option<Amount>,
    pub cash_fee: Option<Amount>,
    pub fee_type: Option<String>,
    pub sub_mch_id: Option<String>,
    pub time_end: Option<String>,
}

/// Fen as a JSON integer or a decimal string; a fractional JSON number matches
/// neither and the message is refused (no floats near money).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    Fen(i64),
    Text(String),
}

/// `POST /cloudpay/callback`: the forwarder's HMAC-SHA256 over
/// `X-Cloudpay-Timestamp` + "\n" + body, the timestamp within five minutes of
/// now (so a captured callback cannot be replayed later), and then a JSON
/// object the callback's fields read from. `now` is unix seconds.
pub fn cloudpay(
    secret: &CloudpaySecret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &Bytes,
    now: i64,
) -> Result<Proven<Callback>, Refused> {
    let refused =
        |reason: &'static str, verdict: Verdict| Refused::new(Kind::Cloudpay, reason, verdict);
    forwarder::verify(secret.expose(), timestamp, signature, body, now)
        .map_err(|e| refused(e.reason(), Verdict::BadSignature))?;
    // Signed by the forwarder, but not a callback: nothing to apply or audit.
    let callback: Callback =
        serde_json::from_slice(body).map_err(|_| refused("malformed", Verdict::Malformed))?;
    Ok(Proven {
        message: callback,
        kind: Kind::Cloudpay,
        authority: Authority::Forwarder,
        body: body.clone(),
    })
}

/// A v3 notification, opened: what its envelope says and its decrypted
/// resource (JSON, as WeChat wrote it), for the event's parser to read.
#[derive(Debug)]
pub struct V3Event {
    /// The envelope's `id` (WeChat's notification id).
    pub id: String,
    pub event_type: String,
    pub resource: Vec<u8>,
}

/// The accounts a decrypted v3 resource names: the merchant's (`mchid`, or
/// `sp_mchid` and `sub_mchid` on the partner endpoints) and its app's.
/// Everything else is the event parser's.
#[derive(Debug, Deserialize)]
struct Accounts {
    appid: Option<String>,
    mchid: Option<String>,
    sp_appid: Option<String>,
    sp_mchid: Option<String>,
    sub_appid: Option<String>,
    sub_mchid: Option<String>,
}

impl Accounts {
    /// Whether these are `entry`'s numbers, as [`MerchantBook::for_message`]
    /// matches a v2 message's `mch_id` and `sub_mch_id`.
    fn are(&self, entry: &MerchantEntry) -> bool {
        let mch_id = self.mchid.as_deref().or(self.sp_mchid.as_deref());
        let sub = self.sub_mchid.as_deref().filter(|s| !s.is_empty());
        mch_id == Some(entry.merchant.mch_id.as_str()) && sub == entry.sub_mch_id.as_deref()
    }

    fn app(&self) -> Option<&str> {
        self.appid.as_deref().or(self.sp_appid.as_deref())
    }
}

/// The refusal reason when no v3 merchant holds a key with the message's
/// `Wechatpay-Serial`: the one a caller may answer by refreshing its keys
/// and proving once more.
pub const UNKNOWN_SERIAL: &str = "unknown_serial";

/// Which v3 endpoint a message came in on: the same proof for both, counted
/// and kept under its own [`Kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V3Endpoint {
    /// `POST /wechat/v3/pay/notify`.
    Pay,
    /// `POST /wechat/v3/refund/notify`.
    Refund,
}

impl V3Endpoint {
    pub fn kind(self) -> Kind {
        match self {
            V3Endpoint::Pay => Kind::PayV3,
            V3Endpoint::Refund => Kind::RefundV3,
        }
    }
}

/// A v3 notification, on either endpoint ([`V3Endpoint`]): the envelope
/// names no merchant, so every v3 merchant is a candidate, with the WeChat
/// keys it accepted when the message came (`merchants`: each with its keys).
/// In this order, each step before anything is parsed from what the previous one did not prove: the headers
/// and the signature over the raw body (5-minute window, probes refused
/// before any key is looked up) under the key `Wechatpay-Serial` names; the
/// envelope; the resource, which opens only under the APIv3 key of the
/// merchant it was sealed for; then the merchant among those whose key opened
/// it is the one whose numbers the resource names (a service provider's
/// sub-merchants share its APIv3 key), and the resource's appid, when it
/// names one, must be that merchant's (a refund's resource names none). As
/// for a v2 refund's `req_info`, the key proves the account, so a resource naming other numbers or another app
/// is refused unstored, like a v2 message naming a merchant we do not serve.
pub fn v3(
    endpoint: V3Endpoint,
    merchants: &[(&MerchantEntry, Arc<WechatKeys>)],
    headers: &SignedHeaders<'_>,
    body: &Bytes,
    now: DateTime<Utc>,
) -> Result<Proven<V3Event>, Refused> {
    let kind = endpoint.kind();
    let refused = |reason: &'static str, verdict: Verdict| Refused::new(kind, reason, verdict);
    let candidates: Vec<Candidate<'_, &MerchantEntry>> = merchants
        .iter()
        .filter_map(|(entry, keys)| {
            Some(Candidate {
                id: *entry,
                keys: keys.as_ref(),
                apiv3_key: &entry.v3.as_ref()?.apiv3_key,
            })
        })
        .collect();
    let opened = notification::open(headers, body, now, &candidates).map_err(|e| {
        let (reason, verdict) = open_refusal(&e);
        refused(reason, verdict)
    })?;
    let accounts: Accounts = serde_json::from_slice(&opened.plaintext)
        .map_err(|_| refused("malformed_resource", Verdict::Malformed))?;
    let entry = opened
        .openers
        .iter()
        .copied()
        .find(|e| accounts.are(e))
        .ok_or(refused("wrong_merchant", Verdict::WrongMerchant))?;
    if accounts.app().is_some() && !apps_match(entry, accounts.app(), accounts.sub_appid.as_deref())
    {
        return Err(refused("wrong_app", Verdict::WrongMerchant));
    }
    let authority = merchant_authority(entry, Proof::V3)
        .ok_or(refused("wrong_merchant", Verdict::WrongMerchant))?;
    Ok(Proven {
        message: V3Event {
            id: opened.notification.id,
            event_type: opened.notification.event_type,
            resource: opened.plaintext,
        },
        kind,
        authority,
        body: body.clone(),
    })
}

/// Why an unopened v3 notification is refused (the reason it is counted
/// under) and what its sender hears. No `_` arm: a new way to fail must be
/// named before it compiles.
fn open_refusal(e: &OpenError) -> (&'static str, Verdict) {
    match e {
        OpenError::Verify(v) => (
            match v {
                VerifyError::Missing(_) => "missing_header",
                VerifyError::SignatureType => "signature_type",
                VerifyError::Probe => "probe",
                VerifyError::Timestamp => "bad_timestamp",
                VerifyError::Stale(_) => "stale_timestamp",
                VerifyError::UnknownSerial(_) => UNKNOWN_SERIAL,
                VerifyError::BadSignature => "bad_signature",
            },
            Verdict::BadSignature,
        ),
        OpenError::Envelope => ("malformed", Verdict::Malformed),
        // The APIv3 key is what proves whose the resource is: a resource that
        // no candidate's key opens is as unproven as a bad signature.
        OpenError::Resource(DecryptError::Open) => ("undecryptable", Verdict::BadSignature),
        OpenError::Resource(
            DecryptError::Algorithm
            | DecryptError::Nonce
            | DecryptError::Base64
            | DecryptError::Text,
        ) => ("malformed_resource", Verdict::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpay_core::wechat::{ApiKey, Merchant};

    const KEY: &str = "gatewaytestkey0123456789abcdefgh";

    fn book() -> MerchantBook {
        MerchantBook::new(vec![MerchantEntry::direct(
            "default",
            Merchant {
                app_id: "wxd930ea5d5a258f4f".into(),
                mch_id: "10000100".into(),
                api_key: ApiKey::parse(KEY).expect("key"),
            },
            SignType::Md5,
        )])
        .expect("one merchant")
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn body(f: &Fields) -> Bytes {
        Bytes::from(xml::encode(f.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("xml"))
    }

    fn reason<T: std::fmt::Debug>(r: Result<Proven<T>, Refused>) -> &'static str {
        match r {
            Ok(p) => panic!("proven: {p:?}"),
            Err(refused) => refused.reason,
        }
    }

    #[test]
    fn a_pay_message_is_proven_by_either_algorithm_of_its_merchants_key_and_says_which() {
        let key = ApiKey::parse(KEY).expect("key");
        for st in [SignType::Md5, SignType::HmacSha256] {
            let mut f = fields(&[("mch_id", "10000100"), ("out_trade_no", "A1")]);
            sign::sign_fields(&mut f, &key, st);
            let proven = pay(&book(), &body(&f)).expect("proven");
            assert_eq!(proven.sign_type(), Some(st));
            assert_eq!(proven.merchant().map(|e| e.name.as_str()), Some("default"));
        }
        let mut other = fields(&[("mch_id", "10000101"), ("out_trade_no", "A1")]);
        sign::sign_fields(&mut other, &key, SignType::Md5);
        assert_eq!(reason(pay(&book(), &body(&other))), "unknown_merchant");
        let mut forged = fields(&[("mch_id", "10000100")]);
        forged.insert("sign".into(), "0".repeat(32));
        assert_eq!(reason(pay(&book(), &body(&forged))), "bad_signature");
        assert_eq!(
            reason(pay(&book(), &Bytes::from_static(b"<xml>"))),
            "malformed"
        );
    }

    #[test]
    fn a_refund_message_is_proven_only_by_a_req_info_that_decrypts_under_its_merchants_key() {
        let key = ApiKey::parse(KEY).expect("key");
        let inner = fields(&[("out_trade_no", "A1"), ("refund_status", "SUCCESS")]);
        let outer = |req_info: String| {
            fields(&[
                ("return_code", "SUCCESS"),
                ("appid", "wxd930ea5d5a258f4f"),
                ("mch_id", "10000100"),
            ])
            .into_iter()
            .chain([("req_info".to_owned(), req_info)])
            .collect::<Fields>()
        };
        let genuine = outer(refund_crypto::encrypt_req_info(&inner, &key).expect("encrypts"));
        let proven = refund(&book(), &body(&genuine)).expect("proven");
        assert_eq!(proven.message(), &inner);
        assert_eq!(proven.sign_type(), None);

        let other = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("key");
        let foreign = outer(refund_crypto::encrypt_req_info(&inner, &other).expect("encrypts"));
        assert_eq!(reason(refund(&book(), &body(&foreign))), "bad_signature");
        let change = |k: &str, v: Option<&str>| {
            let mut f = genuine.clone();
            match v {
                Some(v) => f.insert(k.to_owned(), v.to_owned()),
                None => f.remove(k),
            };
            body(&f)
        };
        for (b, why) in [
            (change("mch_id", Some("10000101")), "unknown_merchant"),
            (change("appid", Some("wx0000000000000000")), "wrong_app"),
            (change("return_code", None), "no_result"),
            (change("return_code", Some("FAIL")), "no_result"),
            (change("req_info", None), "no_req_info"),
        ] {
            assert_eq!(reason(refund(&book(), &b)), why);
        }
    }

    #[test]
    fn a_cloudpay_callback_is_proven_by_a_fresh_hmac_over_its_timestamp_and_body() {
        let secret = CloudpaySecret::parse("cloudpay-test-secret-0123456789ab").expect("secret");
        let now = 1_780_000_000;
        let json = Bytes::from_static(br#"{"returnCode":"SUCCESS","outTradeNo":"A1"}"#);
        let ts = now.to_string();
        let sig = forwarder::sign(secret.expose(), &ts, &json);
        let proven = cloudpay(&secret, Some(&ts), Some(&sig), &json, now).expect("proven");
        assert_eq!(proven.message().out_trade_no.as_deref(), Some("A1"));
        assert!(
            proven.merchant().is_none(),
            "the forwarder proves no merchant"
        );

        assert_eq!(
            reason(cloudpay(&secret, Some(&ts), Some(&sig), &json, now + 301)),
            "stale_timestamp"
        );
        assert_eq!(
            reason(cloudpay(&secret, None, Some(&sig), &json, now)),
            "bad_timestamp"
        );
        assert_eq!(
            reason(cloudpay(&secret, Some(&ts), Some("00"), &json, now)),
            "bad_signature"
        );
        let not_json = Bytes::from_static(b"{");
        let sig = forwarder::sign(secret.expose(), &ts, &not_json);
        assert_eq!(
            reason(cloudpay(&secret, Some(&ts), Some(&sig), &not_json, now)),
            "malformed"
        );
    }

    #[test]
    fn a_v3_resource_names_its_merchant_by_mchid_or_sp_mchid_and_sub_mchid() {
        let direct = book().entries()[0].clone();
        let mut sub = direct.clone();
        sub.sub_mch_id = Some("1900000201".into());
        let accounts = |json: &str| serde_json::from_str::<Accounts>(json).expect("json");
        let a =
            accounts(r#"{"appid":"wxd930ea5d5a258f4f","mchid":"10000100","out_trade_no":"A1"}"#);
        assert!(a.are(&direct) && !a.are(&sub));
        assert_eq!(a.app(), Some("wxd930ea5d5a258f4f"));
        // An empty sub_mchid is no sub-merchant, as for a v2 message.
        assert!(accounts(r#"{"mchid":"10000100","sub_mchid":""}"#).are(&direct));
        let p = accounts(r#"{"sp_appid":"wxsp","sp_mchid":"10000100","sub_mchid":"1900000201"}"#);
        assert!(p.are(&sub) && !p.are(&direct));
        assert_eq!(p.app(), Some("wxsp"));
        assert!(!accounts(r#"{"mchid":"10000101"}"#).are(&direct));
        assert!(!accounts("{}").are(&direct));
    }
}
