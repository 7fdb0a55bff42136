//! AEAD_AES_256_GCM as v3 uses it: notification `resource`s and the platform
//! certificates of `GET /v3/certificates` are sealed under the merchant's
//! APIv3 key (32 bytes, used as they are), a 12-character `nonce` and an
//! `associated_data` string; the base64 ciphertext ends with the 16-byte tag.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::STANDARD, Engine};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use secrecy::{ExposeSecret, SecretBox};

/// The merchant's APIv3 key (商户平台 "APIv3密钥"). Its `Debug` never shows it.
#[derive(Clone)]
pub struct Apiv3Key(Arc<SecretBox<[u8; 32]>>);

impl Apiv3Key {
    /// WeChat's APIv3 key is 32 characters the merchant chooses; anything
    /// else cannot be the key, and every decryption would fail.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let bytes: [u8; 32] = s
            .as_bytes()
            .try_into()
            .map_err(|_| "must be exactly 32 bytes (the APIv3 key set in the merchant platform)")?;
        Ok(Self(Arc::new(SecretBox::new(Box::new(bytes)))))
    }

    /// The key's text, for handing it to another process's configuration (a
    /// harness starting the split binaries); never log it.
    pub fn expose_secret(&self) -> &str {
        // Built only from a &str's bytes, so this is the same valid UTF-8.
        std::str::from_utf8(self.0.expose_secret()).unwrap_or_default()
    }

    fn cipher(&self) -> LessSafeKey {
        // AES-256 takes any 32 bytes; `new` fails only on a wrong length,
        // which the type rules out.
        match UnboundKey::new(&AES_256_GCM, self.0.expose_secret()) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("a 32-byte key is an AES-256 key"),
        }
    }
}

impl fmt::Debug for Apiv3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Apiv3Key(**redacted**)")
    }
}

/// Why a sealed resource could not be opened. None of them says more: a
/// wrong key and a tampered ciphertext look alike, on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("the algorithm is not AEAD_AES_256_GCM")]
    Algorithm,
    #[error("the nonce is not 12 bytes")]
    Nonce,
    #[error("the ciphertext is not base64")]
    Base64,
    #[error(
        "the ciphertext does not open under this merchant's APIv3 key (tampered, or another key)"
    )]
    Open,
    #[error("the plaintext is not UTF-8 JSON")]
    Text,
}

/// The name v3 gives this cipher in `algorithm`.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

fn nonce(nonce: &str) -> Result<Nonce, DecryptError> {
    let bytes: [u8; NONCE_LEN] = nonce
        .as_bytes()
        .try_into()
        .map_err(|_| DecryptError::Nonce)?;
    Ok(Nonce::assume_unique_for_key(bytes))
}

/// Opens `ciphertext` (base64, tag at its end).
pub fn decrypt(
    key: &Apiv3Key,
    nonce_str: &str,
    associated_data: &str,
    ciphertext: &str,
) -> Result<Vec<u8>, DecryptError> {
    let nonce = nonce(nonce_str)?;
    let mut in_out = STANDARD
        .decode(ciphertext.trim())
        .map_err(|_| DecryptError::Base64)?;
    let plain = key
        .cipher()
        .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut in_out)
        .map_err(|_| DecryptError::Open)?;
    Ok(plain.to_vec())
}

/// Seals `plaintext` as WeChat does (base64, tag appended): what the sandbox
/// sends, and what tests tamper with.
pub fn encrypt(
    key: &Apiv3Key,
    nonce_str: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, DecryptError> {
    let nonce = nonce(nonce_str)?;
    let mut in_out = plaintext.to_vec();
    key.cipher()
        .seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut in_out)
        .map_err(|_| DecryptError::Open)?;
    Ok(STANDARD.encode(in_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Apiv3Key {
        Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnop").expect("32 bytes")
    }

    #[test]
    fn a_key_is_exactly_32_bytes_and_never_printed() {
        assert!(Apiv3Key::parse("short").is_err());
        assert!(Apiv3Key::parse(&"a".repeat(33)).is_err());
        let k = key();
        assert_eq!(format!("{k:?}"), "Apiv3Key(**redacted**)");
        assert_eq!(k.expose_secret(), "0123456789abcdefABCDEFGHijklmnop");
    }

    #[test]
    fn what_is_sealed_opens_and_nothing_else_does() {
        let sealed = encrypt(&key(), "fdasflkja484", "transaction", b"{\"a\":1}").expect("seal");
        assert_eq!(
            decrypt(&key(), "fdasflkja484", "transaction", &sealed).expect("open"),
            b"{\"a\":1}"
        );
        // Another AAD, nonce or key, or one flipped bit: refused alike.
        assert_eq!(
            decrypt(&key(), "fdasflkja484", "certificate", &sealed),
            Err(DecryptError::Open)
        );
        assert_eq!(
            decrypt(&key(), "fdasflkja485", "transaction", &sealed),
            Err(DecryptError::Open)
        );
        let other = Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnoq").expect("32 bytes");
        assert_eq!(
            decrypt(&other, "fdasflkja484", "transaction", &sealed),
            Err(DecryptError::Open)
        );
        let mut raw = STANDARD.decode(&sealed).expect("base64");
        raw[0] ^= 1;
        assert_eq!(
            decrypt(&key(), "fdasflkja484", "transaction", &STANDARD.encode(raw)),
            Err(DecryptError::Open)
        );
        assert_eq!(
            decrypt(&key(), "short", "transaction", &sealed),
            Err(DecryptError::Nonce)
        );
        assert_eq!(
            decrypt(&key(), "fdasflkja484", "transaction", "%%%"),
            Err(DecryptError::Base64)
        );
    }
}
