//! The keys of a v3 conversation. The merchant's: its API private key
//! (`apiclient_key.pem`, PKCS#8 RSA) and its API certificate's serial, which
//! sign every request and every `paySign`. WeChat's, which verify every answer
//! and notification, in either of WeChat's two modes, by the id
//! `Wechatpay-Serial` names: a WeChat Pay public key (`pub_key.pem`, id
//! `PUB_KEY_ID_…`) or platform certificates (serial = the certificate's
//! serial number, valid only between its dates). A merchant switching modes
//! holds both; [`WechatKeys`] holds any number and picks by id.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256},
};
use rustls_pki_types::{
    pem::PemObject, CertificateDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer,
};
use x509_parser::{
    oid_registry::OID_PKCS1_RSAENCRYPTION, prelude::FromDer, x509::SubjectPublicKeyInfo,
};

use super::{
    aead::{self, Apiv3Key},
    models::CertificateEntry,
};

/// Why key material was refused. Never carries the material itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not a PEM PKCS#8 private key (a PRIVATE KEY block, as in apiclient_key.pem)")]
    PrivatePem,
    #[error("is not an RSA private key of 2048 bits or more")]
    PrivateKey,
    #[error("is not a PEM public key (a PUBLIC KEY block, as in pub_key.pem)")]
    PublicPem,
    #[error("is not an RSA public key")]
    PublicKey,
    #[error("is not a PEM X.509 certificate")]
    Certificate,
    #[error("certificate {0}: the certificate inside is not the one its entry names")]
    SerialMismatch(String),
    #[error("certificate {serial}: {reason}")]
    Sealed {
        serial: String,
        reason: aead::DecryptError,
    },
    #[error("must not be empty")]
    EmptyId,
    #[error("signing failed")]
    Sign,
}

/// The merchant's API private key and the serial of its API certificate.
/// Cloning shares the key; `Debug` shows only the serial.
#[derive(Clone)]
pub struct MerchantSigner {
    key: Arc<RsaKeyPair>,
    serial_no: String,
}

impl MerchantSigner {
    /// From `apiclient_key.pem` (PKCS#8, as the merchant platform's tool writes it).
    pub fn from_pem(pem: &[u8], serial_no: &str) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| KeyError::PrivatePem)?;
        let key =
            RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| KeyError::PrivateKey)?;
        if serial_no.is_empty() {
            return Err(KeyError::EmptyId);
        }
        Ok(Self {
            key: Arc::new(key),
            serial_no: serial_no.to_owned(),
        })
    }

    /// The API certificate's serial, as `Authorization`'s `serial_no` names it.
    pub fn serial_no(&self) -> &str {
        &self.serial_no
    }

    /// The public half, named by the serial: what WeChat keeps from the
    /// merchant's API certificate to check its requests (the sandbox plays
    /// that side), and what a harness registers for a key pair it issued.
    pub fn public_key(&self) -> WechatKey {
        WechatKey {
            id: self.serial_no.clone(),
            // ring gives the RSAPublicKey DER, the form `WechatKey` verifies with.
            public_key: self.key.public().as_ref().to_vec(),
            valid: None,
            certificate_pem: None,
        }
    }

    /// RSA PKCS#1 v1.5 SHA-256 of `message`, standard base64.
    pub fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(STANDARD.encode(signature))
    }
}

impl fmt::Debug for MerchantSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantSigner")
            .field("serial_no", &self.serial_no)
            .field("key", &"**redacted**")
            .finish()
    }
}

/// One of WeChat's verifying keys, by the id `Wechatpay-Serial` names it with.
#[derive(Clone, PartialEq, Eq)]
pub struct WechatKey {
    id: String,
    /// The RSAPublicKey (PKCS#1 DER) ring verifies with.
    public_key: Vec<u8>,
    /// A platform certificate's validity; `None` for a public key (no dates).
    valid: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The certificate's PEM, to keep it (in the database) as it came.
    certificate_pem: Option<String>,
}

impl fmt::Debug for WechatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatKey")
            .field("id", &self.id)
            .field("valid", &self.valid)
            .finish()
    }
}

fn rsa_public_key(spki_der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| KeyError::PublicKey)?;
    rsa_of(&spki)
}

fn rsa_of(spki: &SubjectPublicKeyInfo<'_>) -> Result<Vec<u8>, KeyError> {
    if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
        return Err(KeyError::PublicKey);
    }
    Ok(spki.subject_public_key.data.to_vec())
}

impl WechatKey {
    /// A WeChat Pay public key (`pub_key.pem`) and its `PUB_KEY_ID_…`.
    pub fn from_public_key_pem(id: &str, pem: &[u8]) -> Result<Self, KeyError> {
        if id.is_empty() {
            return Err(KeyError::EmptyId);
        }
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| KeyError::PublicPem)?;
        Ok(Self {
            id: id.to_owned(),
            public_key: rsa_public_key(der.as_ref())?,
            valid: None,
            certificate_pem: None,
        })
    }

    /// A platform certificate (PEM); its id is its serial number in
    /// uppercase hex, as WeChat writes `serial_no`.
    pub fn from_certificate_pem(pem: &str) -> Result<Self, KeyError> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| KeyError::Certificate)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| KeyError::Certificate)?;
        let validity = cert.validity();
        let at = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).ok_or(KeyError::Certificate);
        Ok(Self {
            id: serial_hex(cert.raw_serial()),
            public_key: rsa_of(cert.public_key())?,
            valid: Some((
                at(validity.not_before.timestamp())?,
                at(validity.not_after.timestamp())?,
            )),
            certificate_pem: Some(pem.to_owned()),
        })
    }

    /// Opens one entry of `GET /v3/certificates` with the APIv3 key, and
    /// checks that the certificate inside is the one the entry names.
    pub fn from_certificate_entry(
        entry: &CertificateEntry,
        key: &Apiv3Key,
    ) -> Result<Self, KeyError> {
        let sealed = &entry.encrypt_certificate;
        let sealed_err = |reason| KeyError::Sealed {
            serial: entry.serial_no.clone(),
            reason,
        };
        if sealed.algorithm != aead::ALGORITHM {
            return Err(sealed_err(aead::DecryptError::Algorithm));
        }
        let pem = aead::decrypt(
            key,
            &sealed.nonce,
            &sealed.associated_data,
            &sealed.ciphertext,
        )
        .map_err(sealed_err)?;
        let pem = String::from_utf8(pem).map_err(|_| sealed_err(aead::DecryptError::Text))?;
        let cert = Self::from_certificate_pem(&pem)?;
        if !cert.id.eq_ignore_ascii_case(&entry.serial_no) {
            return Err(KeyError::SerialMismatch(entry.serial_no.clone()));
        }
        Ok(cert)
    }

    /// What `Wechatpay-Serial` names this key by.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The validity of a platform certificate (`None`: a public key).
    pub fn validity(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.valid
    }

    /// The certificate as it came, for keeping it.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Whether the key may verify at `now`: a certificate between its dates.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.valid
            .is_none_or(|(from, until)| from <= now && now < until)
    }

    /// Whether `signature` (base64) is this key's RSA-SHA256 over `message`.
    pub fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
            .verify(message, &signature)
            .is_ok()
    }
}

/// A serial number as WeChat writes it: uppercase hex without the DER's
/// leading zero bytes.
fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode_upper(&raw[start..])
}

/// Every key a merchant accepts WeChat's signatures from: its public key,
/// its platform certificates, or both while it switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WechatKeys {
    keys: Vec<WechatKey>,
}

impl WechatKeys {
    pub fn new(keys: Vec<WechatKey>) -> Self {
        let mut set = Self::default();
        for k in keys {
            set.insert(k);
        }
        set
    }

    /// Adds a key, replacing one with the same id (a certificate downloaded again).
    pub fn insert(&mut self, key: WechatKey) {
        self.keys.retain(|k| k.id != key.id);
        self.keys.push(key);
    }

    /// The key `id` names, if it is known and usable at `now`.
    pub fn get(&self, id: &str, now: DateTime<Utc>) -> Option<&WechatKey> {
        self.keys
            .iter()
            .find(|k| k.id.eq_ignore_ascii_case(id) && k.usable_at(now))
    }

    /// Drops certificates past their end (public keys stay).
    pub fn drop_expired(&mut self, now: DateTime<Utc>) {
        self.keys
            .retain(|k| k.valid.is_none_or(|(_, until)| now < until));
    }

    /// The newest usable key to name in `Wechatpay-Serial` on requests: the
    /// public key when there is one (WeChat requires it in that mode), else
    /// the certificate valid the longest.
    pub fn preferred(&self, now: DateTime<Utc>) -> Option<&WechatKey> {
        self.keys
            .iter()
            .filter(|k| k.usable_at(now))
            .max_by_key(|k| k.valid.map_or(DateTime::<Utc>::MAX_UTC, |(_, until)| until))
    }

    pub fn iter(&self) -> impl Iterator<Item = &WechatKey> {
        self.keys.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_uppercase_hex_without_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x8a, 0x01]), "8A01");
        assert_eq!(serial_hex(&[0x51, 0x57]), "5157");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn bad_material_is_refused_without_echoing_it() {
        let e = MerchantSigner::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            "1",
        )
        .expect_err("not a key");
        assert!(!e.to_string().contains("c2VjcmV0"));
        assert_eq!(
            WechatKey::from_public_key_pem("PUB_KEY_ID_1", b"nothing").expect_err("not PEM"),
            KeyError::PublicPem
        );
        assert_eq!(
            WechatKey::from_certificate_pem("nothing").expect_err("not PEM"),
            KeyError::Certificate
        );
    }
}
