//! Signing (安全规范): the canonical string, MD5 and HMAC-SHA256, and
//! constant-time verification. Also owns the API key type, which never prints.

use std::{fmt, str::FromStr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The merchant's API key (商户平台 API 密钥). Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// WeChat v2 keys are 32 ASCII letters and digits; anything else is a typo
    /// that would make every signature wrong, so it is refused at start-up.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("must be 32 ASCII letters and digits");
        }
        Ok(Self(SecretString::from(s.to_owned())))
    }

    /// A random key nobody holds: what a v3 merchant without an APIv2 key
    /// gets, so that every v2 signature made for it fails to verify.
    pub fn unguessable() -> Self {
        use rand::{distr::Alphanumeric, Rng};
        let key: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Self(SecretString::from(key))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The key's text, for handing it to another process's configuration (a
    /// harness starting the split binaries). Named like `secrecy`'s so every
    /// place that reveals a secret is found by one search; never log it.
    pub fn expose_secret(&self) -> &str {
        self.expose()
    }

    /// Lowercase hex MD5 of the key: the AES key of refund notifications.
    pub fn md5_hex(&self) -> String {
        hex::encode(Md5::digest(self.expose().as_bytes()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(**redacted**)")
    }
}

/// The two v2 signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = SignError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MD5" => Ok(SignType::Md5),
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            _ => Err(SignError::UnknownSignType),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the message has no sign")]
    Missing,
    #[error("the signature does not match")]
    Mismatch,
    #[error("unknown sign_type")]
    UnknownSignType,
}

/// `k1=v1&k2=v2…&key=API_KEY` over every field but `sign` whose value is non-empty,
/// keys in ASCII order. Duplicate keys cannot occur: callers pass a map.
fn canonical_string<K: AsRef<str>, V: AsRef<str>>(
    fields: impl IntoIterator<Item = (K, V)>,
    key: &ApiKey,
) -> String {
    let owned: Vec<(K, V)> = fields.into_iter().collect();
    let mut pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .collect();
    pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut s = String::with_capacity(
        pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
            + 37,
    );
    for (k, v) in pairs {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('&');
    }
    s.push_str("key=");
    s.push_str(key.expose());
    s
}

/// The uppercase-hex signature of `fields` under `key`.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    fields: impl IntoIterator<Item = (K, V)>,
    key: &ApiKey,
    sign_type: SignType,
) -> String {
    let message = canonical_string(fields, key);
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(message.as_bytes())),
        SignType::HmacSha256 => {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = match Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(message.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Checks `fields["sign"]` against the signature of the other fields, in constant time.
/// The caller decides the sign type (the message's `sign_type`, or the order's).
pub fn verify(fields: &super::Fields, key: &ApiKey, sign_type: SignType) -> Result<(), SignError> {
    let given = fields.get("sign").ok_or(SignError::Missing)?;
    if given.is_empty() {
        return Err(SignError::Missing);
    }
    let expected = sign(fields.iter(), key, sign_type);
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err(SignError::Mismatch)
    }
}

/// Checks a message WeChat signed with a merchant's key, whichever of the
/// key's algorithms it used, and says which: the one its `sign_type` names,
/// or, when it names none (WeChat may omit it even for HMAC-SHA256), the one
/// the signature's length tells (32 hex digits MD5, 64 HMAC-SHA256). Nothing
/// outside the message decides, so a message is proven before anything about
/// its order is read.
pub fn verify_any(fields: &super::Fields, key: &ApiKey) -> Result<SignType, SignError> {
    let sign_type = match fields.get("sign_type") {
        Some(named) => named
            .parse::<SignType>()
            .map_err(|_| SignError::UnknownSignType)?,
        None => match fields.get("sign").map(String::len) {
            None | Some(0) => return Err(SignError::Missing),
            Some(32) => SignType::Md5,
            Some(64) => SignType::HmacSha256,
            Some(_) => return Err(SignError::Mismatch),
        },
    };
    verify(fields, key, sign_type)?;
    Ok(sign_type)
}

/// Adds `sign` (and `sign_type` when it is not MD5, as WeChat requires) to `fields`.
pub fn sign_fields(fields: &mut super::Fields, key: &ApiKey, sign_type: SignType) {
    fields.remove("sign");
    if sign_type != SignType::Md5 {
        fields.insert("sign_type".into(), sign_type.as_str().into());
    }
    let s = sign(fields.iter(), key, sign_type);
    fields.insert("sign".into(), s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::Fields;

    #[test]
    fn a_message_verifies_under_whichever_algorithm_it_names_or_its_length_tells() {
        let key = ApiKey::parse("192006250b4c09247ec02edce69f6a2d").expect("key");
        for st in [SignType::Md5, SignType::HmacSha256] {
            let mut named = official_fields();
            sign_fields(&mut named, &key, st);
            assert_eq!(verify_any(&named, &key), Ok(st));
            // Without sign_type, the signature's length tells.
            let mut bare = official_fields();
            bare.remove("sign_type");
            let sig = sign(bare.iter(), &key, st);
            bare.insert("sign".into(), sig);
            assert_eq!(verify_any(&bare, &key), Ok(st));
            // Another key, or a signature cut short, proves nothing.
            let other = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("key");
            assert_eq!(verify_any(&bare, &other), Err(SignError::Mismatch));
            bare.get_mut("sign").expect("signed").pop();
            assert_eq!(verify_any(&bare, &key), Err(SignError::Mismatch));
        }
        let mut unknown = official_fields();
        sign_fields(&mut unknown, &key, SignType::Md5);
        unknown.insert("sign_type".into(), "SHA1".into());
        assert_eq!(verify_any(&unknown, &key), Err(SignError::UnknownSignType));
        let mut unsigned = official_fields();
        unsigned.remove("sign");
        assert_eq!(verify_any(&unsigned, &key), Err(SignError::Missing));
    }

    fn official_fields() -> Fields {
        [
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn official_key() -> ApiKey {
        ApiKey::parse("192006250b4c09247ec02edce69f6a2d").expect("vector key is valid")
    }

    #[test]
    fn official_md5_vector() {
        assert_eq!(
            sign(official_fields().iter(), &official_key(), SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
    }

    #[test]
    fn official_hmac_sha256_vector() {
        assert_eq!(
            sign(
                official_fields().iter(),
                &official_key(),
                SignType::HmacSha256
            ),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn empty_values_and_sign_are_left_out_of_the_signature() {
        let mut fields = official_fields();
        fields.insert("attach".into(), String::new());
        fields.insert("sign".into(), "WHATEVER".into());
        assert_eq!(
            sign(fields.iter(), &official_key(), SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
    }

    #[test]
    fn verify_accepts_the_right_signature_and_refuses_others() {
        let key = official_key();
        let mut fields = official_fields();
        fields.insert("sign".into(), "9A0A8659F005D6984697E2CA0A9CF3B7".into());
        assert_eq!(verify(&fields, &key, SignType::Md5), Ok(()));
        // Same fields, wrong algorithm.
        assert_eq!(
            verify(&fields, &key, SignType::HmacSha256),
            Err(SignError::Mismatch)
        );
        // Lowercase hex is not what WeChat sends.
        fields.insert("sign".into(), "9a0a8659f005d6984697e2ca0a9cf3b7".into());
        assert_eq!(
            verify(&fields, &key, SignType::Md5),
            Err(SignError::Mismatch)
        );
        // Another key.
        let other = ApiKey::parse("00000000000000000000000000000000").expect("valid");
        fields.insert("sign".into(), "9A0A8659F005D6984697E2CA0A9CF3B7".into());
        assert_eq!(
            verify(&fields, &other, SignType::Md5),
            Err(SignError::Mismatch)
        );
        // A changed field.
        fields.insert("body".into(), "test2".into());
        assert_eq!(
            verify(&fields, &key, SignType::Md5),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn a_message_without_sign_is_refused() {
        let mut fields = official_fields();
        assert_eq!(
            verify(&fields, &official_key(), SignType::Md5),
            Err(SignError::Missing)
        );
        fields.insert("sign".into(), String::new());
        assert_eq!(
            verify(&fields, &official_key(), SignType::Md5),
            Err(SignError::Missing)
        );
    }

    #[test]
    fn chinese_values_sign_as_utf8() {
        let key = official_key();
        let mut fields = official_fields();
        fields.insert("body".into(), "腾讯充值中心-QQ会员充值".into());
        let expected = hex::encode_upper(Md5::digest(
            "appid=wxd930ea5d5a258f4f&body=腾讯充值中心-QQ会员充值&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
                .as_bytes(),
        ));
        assert_eq!(sign(fields.iter(), &key, SignType::Md5), expected);
    }

    #[test]
    fn sign_fields_adds_sign_type_for_hmac_only() {
        let key = official_key();
        let mut md5 = official_fields();
        sign_fields(&mut md5, &key, SignType::Md5);
        assert!(!md5.contains_key("sign_type"));
        assert_eq!(verify(&md5, &key, SignType::Md5), Ok(()));
        let mut hmac = official_fields();
        sign_fields(&mut hmac, &key, SignType::HmacSha256);
        assert_eq!(
            hmac.get("sign_type").map(String::as_str),
            Some("HMAC-SHA256")
        );
        assert_eq!(verify(&hmac, &key, SignType::HmacSha256), Ok(()));
    }

    #[test]
    fn the_key_never_prints() {
        let key = official_key();
        assert!(!format!("{key:?}").contains("192006250b4c"));
        assert!(ApiKey::parse("short").is_err());
        assert!(ApiKey::parse(&"é".repeat(16)).is_err());
    }
}
