//! RSA key pairs made by the sandbox: WeChat's side (its platform
//! certificates' keys and the WeChat Pay public key) and the API key pair it
//! issues a v3 merchant (`apiclient_key.pem`), as the merchant platform's
//! certificate tool would.
//!
//! `ring` cannot generate RSA keys, so generation alone uses the `rsa` crate;
//! the generated PKCS#8 is handed to `ring` at once, and every signature the
//! sandbox makes is `ring`'s (through core's `MerchantSigner`). The `rsa`
//! crate's RUSTSEC-2023-0071 (the Marvin timing side channel) concerns its
//! private-key operations (decryption and signing), which nothing here calls.

use std::{
    fmt,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use rand::Rng;
use rsa::{pkcs8::EncodePrivateKey, rand_core::OsRng, RsaPrivateKey};
use rustls::pki_types::{pem::PemObject, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};
use wxpay_core::wechat::v3::{KeyError, MerchantSigner, WechatKey};

/// WeChat's keys and merchants' API keys are RSA 2048.
const BITS: usize = 2048;

/// Why a key pair could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyGenError {
    #[error("an RSA key pair could not be generated")]
    Generate,
    #[error("the generated key was refused: {0}")]
    Key(#[from] KeyError),
    #[error("a certificate could not be made: {0}")]
    Certificate(String),
    #[error("{path} cannot be written: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// A generated RSA key pair: the private key as PKCS#8 PEM (what
/// `apiclient_key.pem` holds) and the public key as SPKI PEM (what
/// `pub_key.pem` holds). Cloning shares it; `Debug` shows no key.
#[derive(Clone)]
pub struct KeyPair {
    private_pem: Arc<SecretString>,
    public_pem: Arc<str>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPair(**redacted**)")
    }
}

impl KeyPair {
    /// A fresh RSA 2048 key pair. CPU-bound (about a second, more in an
    /// unoptimised build): call it off the async runtime's threads.
    pub fn generate() -> Result<Self, KeyGenError> {
        let key = RsaPrivateKey::new(&mut OsRng, BITS).map_err(|_| KeyGenError::Generate)?;
        let der = key.to_pkcs8_der().map_err(|_| KeyGenError::Generate)?;
        Self::from_pkcs8_der(der.as_bytes())
    }

    /// A key pair from a PKCS#8 PEM (a merchant's `apiclient_key.pem`).
    pub fn from_private_pem(pem: &str) -> Result<Self, KeyGenError> {
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| KeyError::PrivatePem)?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyGenError> {
        // rcgen (on ring) reads the PKCS#8 and writes both PEMs; ring checks the key.
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|_| KeyError::PrivateKey)?;
        Ok(Self {
            private_pem: Arc::new(SecretString::from(pair.serialize_pem())),
            public_pem: pair.public_key_pem().into(),
        })
    }

    /// The private key, PKCS#8 PEM. Never log it.
    pub fn private_pem(&self) -> &SecretString {
        &self.private_pem
    }

    /// The public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A `ring` signer for this key, named `id` (a serial or a `PUB_KEY_ID_…`).
    pub fn signer(&self, id: &str) -> Result<MerchantSigner, KeyError> {
        MerchantSigner::from_pem(self.private_pem.expose_secret().as_bytes(), id)
    }

    /// The public half as a verifying key named `id`.
    pub fn public_key(&self, id: &str) -> Result<WechatKey, KeyError> {
        WechatKey::from_public_key_pem(id, self.public_pem.as_bytes())
    }

    /// The rcgen key pair, to sign a certificate with.
    pub(crate) fn rcgen(&self) -> Result<rcgen::KeyPair, KeyGenError> {
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
            self.private_pem.expose_secret(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| KeyGenError::Certificate(e.to_string()))
    }
}

/// A serial number shaped like WeChat's: 40 uppercase hex digits (20 bytes),
/// the first byte in 0x10..0x80 so that the DER integer is positive and its
/// hex has no leading zero (how `WechatKey` names a certificate).
pub fn serial_number() -> [u8; 20] {
    let mut bytes: [u8; 20] = rand::rng().random();
    bytes[0] = rand::rng().random_range(0x10..0x80);
    bytes
}

/// `serial_number()` as WeChat writes it.
pub fn serial_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// What a merchant is issued: its API key pair and the serial of the API
/// certificate that would carry it (what `serial_no` names in its requests).
#[derive(Clone)]
pub struct IssuedMerchantKey {
    /// The `apiclient_key.pem` written (PKCS#8 PEM).
    pub private_key_path: PathBuf,
    /// Hex, 40 digits: the merchant file's `serial_no`.
    pub serial_no: String,
    /// The key pair itself (its public half is what the sandbox checks requests with).
    pub key: KeyPair,
}

impl fmt::Debug for IssuedMerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedMerchantKey")
            .field("private_key_path", &self.private_key_path)
            .field("serial_no", &self.serial_no)
            .finish_non_exhaustive()
    }
}

impl IssuedMerchantKey {
    /// The public half, named by the serial: what the sandbox registers.
    pub fn public_key(&self) -> Result<WechatKey, KeyError> {
        self.key.public_key(&self.serial_no)
    }

    /// The signer a v3 client makes from the written file.
    pub fn signer(&self) -> Result<MerchantSigner, KeyError> {
        self.key.signer(&self.serial_no)
    }
}

/// Generates a merchant's API key pair and serial and writes the private key
/// to `dir/apiclient_key.pem` (the name WeChat's tool gives it; readable by
/// its owner only). Blocking (key generation and a file write).
pub fn issue_merchant_key(dir: &Path) -> Result<IssuedMerchantKey, KeyGenError> {
    issue_merchant_key_at(
        &dir.join("apiclient_key.pem"),
        &serial_hex(&serial_number()),
    )
}

/// [`issue_merchant_key`] to a chosen file and serial (a merchants file names both).
pub fn issue_merchant_key_at(
    path: &Path,
    serial_no: &str,
) -> Result<IssuedMerchantKey, KeyGenError> {
    let key = KeyPair::generate()?;
    write_private(path, key.private_pem().expose_secret().as_bytes())?;
    Ok(IssuedMerchantKey {
        private_key_path: path.to_owned(),
        serial_no: serial_no.to_owned(),
        key,
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyGenError> {
    let failed = |source| KeyGenError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(bytes).map_err(failed)
}

/// Writes a public file (a public key or certificate PEM).
pub(crate) fn write_public(path: &Path, text: &str) -> Result<(), KeyGenError> {
    let failed = |source| KeyGenError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_forty_hex_digits_without_a_leading_zero() {
        for _ in 0..50 {
            let s = serial_hex(&serial_number());
            assert_eq!(s.len(), 40);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
            assert_ne!(&s[..1], "0");
        }
    }

    #[test]
    fn an_issued_key_is_written_and_signs_what_its_public_half_verifies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let issued = issue_merchant_key(dir.path()).expect("issued");
        let pem = std::fs::read(&issued.private_key_path).expect("written");
        let signer = MerchantSigner::from_pem(&pem, &issued.serial_no).expect("PKCS#8");
        let signature = signer.sign(b"message").expect("signs");
        let public = issued.public_key().expect("public half");
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"other", &signature));
        assert_eq!(public, signer.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&issued.private_key_path)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        assert!(!format!("{issued:?}").contains("PRIVATE"));
    }
}
