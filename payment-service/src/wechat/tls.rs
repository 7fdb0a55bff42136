//! The client side of WeChat's mutual TLS: the merchant's API client certificate
//! (`/secapi/` refuses a request without it) and extra CAs trusted for
//! `WECHAT_API_BASE` (the sandbox's own CA). It owns reading them — a PEM pair,
//! or the `apiclient_cert.p12` WeChat hands out (legacy-encrypted PKCS#12,
//! password = mch_id) — checking them once at the edge, and handing reqwest an
//! identity. It never logs, prints or returns key material, and it does not
//! decide which calls need the certificate: the HTTP client sends it whenever a
//! server asks.

use std::{fmt, path::Path};

use base64::Engine as _;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use secrecy::{zeroize::Zeroizing, ExposeSecret, SecretString};
use wxpay_core::wechat::MerchantEntry;
use wxpay_runtime::config::{optional, ConfigError};

/// The merchant's client certificate and/or extra trusted CAs, checked and ready
/// for reqwest. Cheap to clone; `Debug` shows what is there, never the key.
#[derive(Clone, Default)]
pub struct ClientTls {
    identity: Option<reqwest::Identity>,
    extra_roots: Vec<reqwest::Certificate>,
}

/// Which input a [`TlsError`] is about: each maps to its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsInput {
    ClientCert,
    ClientKey,
    P12,
    P12Password,
    ExtraRoot,
}

impl TlsInput {
    /// The environment variable that supplies this input.
    pub fn env_var(self) -> &'static str {
        match self {
            TlsInput::ClientCert => "WECHAT_CLIENT_CERT",
            TlsInput::ClientKey => "WECHAT_CLIENT_KEY",
            TlsInput::P12 => "WECHAT_CLIENT_P12",
            TlsInput::P12Password => "WECHAT_CLIENT_P12_PASSWORD",
            TlsInput::ExtraRoot => "WECHAT_EXTRA_ROOT_CA",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            TlsInput::ClientCert => "the client certificate",
            TlsInput::ClientKey => "the client private key",
            TlsInput::P12 => "the PKCS#12 file",
            TlsInput::P12Password => "the PKCS#12 password",
            TlsInput::ExtraRoot => "the extra root CA",
        }
    }
}

/// Why a certificate, key or PKCS#12 file cannot be used. The reason names the
/// problem and, for files, the path; never a byte of a key or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {reason}", input.noun())]
pub struct TlsError {
    pub input: TlsInput,
    pub reason: String,
}

impl TlsError {
    fn new(input: TlsInput, reason: impl Into<String>) -> Self {
        Self {
            input,
            reason: reason.into(),
        }
    }

    /// The same problem as a start-up error naming the variable.
    pub fn into_config_error(self) -> ConfigError {
        ConfigError::new(self.input.env_var(), self.reason)
    }
}

impl ClientTls {
    /// The merchant's certificate chain and private key, PEM (WeChat's
    /// `apiclient_cert.pem` + `apiclient_key.pem`). The key may be PKCS#8, PKCS#1
    /// or SEC1, and must belong to the first certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs = certificates(cert_pem, TlsInput::ClientCert)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::new(
                TlsInput::ClientKey,
                "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            ),
            _ => TlsError::new(TlsInput::ClientKey, "is not valid PEM"),
        })?;
        Self::from_der(&certs, &key, TlsInput::ClientKey)
    }

    /// [`Self::from_pem`] from two files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert, TlsInput::ClientCert)?;
        let key_pem = read(key, TlsInput::ClientKey)?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// WeChat's `apiclient_cert.p12`: PKCS#12 whose certificates are encrypted with
    /// pbeWithSHAAnd40BitRC2-CBC and key with pbeWithSHAAnd3-KeyTripleDES-CBC
    /// (OpenSSL's legacy defaults), or the modern PBES2/AES kind. WeChat's password
    /// is the merchant's mch_id.
    pub fn from_p12(der: &[u8], password: &str) -> Result<Self, TlsError> {
        let store = p12_keystore::KeyStore::from_pkcs12(der, password).map_err(|e| match e {
            // The MAC over the whole file is checked first: a wrong password fails
            // there, before anything is decrypted.
            p12_keystore::error::Error::MacError(_) => TlsError::new(
                TlsInput::P12Password,
                format!("does not open {}", TlsInput::P12.env_var()),
            ),
            other => TlsError::new(
                TlsInput::P12,
                // The crate's errors describe the structure (DER, algorithms), not the contents.
                format!("is not a PKCS#12 file this service can read ({other})"),
            ),
        })?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            TlsError::new(TlsInput::P12, "holds no private key with its certificate")
        })?;
        let certs: Vec<CertificateDer<'static>> = chain
            .chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        // The decrypted key bag is a PKCS#8 PrivateKeyInfo.
        let key = PrivateKeyDer::Pkcs8(chain.key().to_vec().into());
        Self::from_der(&certs, &key, TlsInput::P12)
    }

    /// [`Self::from_p12`] from a file.
    pub fn from_p12_file(path: &Path, password: &str) -> Result<Self, TlsError> {
        Self::from_p12(&read(path, TlsInput::P12)?, password)
    }

    /// No client certificate, only an extra trusted CA (PEM, one or more):
    /// enough for every endpoint but `/secapi/` on a server that CA vouches for.
    pub fn trusting(ca_pem: &[u8]) -> Result<Self, TlsError> {
        Self::default().with_extra_root(ca_pem)
    }

    /// Also trusts the CA certificate(s) in `ca_pem` for the API's host, besides
    /// the usual public roots.
    pub fn with_extra_root(mut self, ca_pem: &[u8]) -> Result<Self, TlsError> {
        for der in certificates(ca_pem, TlsInput::ExtraRoot)? {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|_| TlsError::new(TlsInput::ExtraRoot, "is not a usable certificate"))?;
            self.extra_roots.push(cert);
        }
        // A certificate rustls cannot take as a trust anchor fails only when a
        // client is built: find out now, at start-up, not on the first call.
        let mut check = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        for root in &self.extra_roots {
            check = check.add_root_certificate(root.clone());
        }
        check
            .build()
            .map_err(|_| TlsError::new(TlsInput::ExtraRoot, "is not a usable CA certificate"))?;
        Ok(self)
    }

    /// [`Self::with_extra_root`] from a file.
    pub fn with_extra_root_file(self, path: &Path) -> Result<Self, TlsError> {
        let pem = read(path, TlsInput::ExtraRoot)?;
        self.with_extra_root(&pem)
    }

    /// The extra trusted CAs (for a client built elsewhere: the v3 one).
    pub fn extra_roots(&self) -> &[reqwest::Certificate] {
        &self.extra_roots
    }

    /// Whether a client certificate (and its key) is configured.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Gives `builder` the identity and the extra roots. For the WeChat client,
    /// and for any other reqwest client that must speak to the same API.
    pub fn configure(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder = builder.use_rustls_tls();
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    }

    /// `WECHAT_CLIENT_CERT` + `WECHAT_CLIENT_KEY` (PEM paths, both or neither), or
    /// `WECHAT_CLIENT_P12` (+ `WECHAT_CLIENT_P12_PASSWORD`, by default `mch_id`),
    /// and `WECHAT_EXTRA_ROOT_CA` (a PEM path). `None` when none is set.
    pub fn from_env(mch_id: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(optional, mch_id)
    }

    /// The certificate a `[[merchant]]` table names (`client_cert` +
    /// `client_key`, or `client_p12` + `client_p12_password`), read and checked
    /// exactly as the `WECHAT_CLIENT_*` variables are, plus the deployment's
    /// `WECHAT_EXTRA_ROOT_CA`. A problem names the file's merchant and field.
    pub fn for_entry(entry: &MerchantEntry) -> Result<Option<Self>, ConfigError> {
        let field = |input: TlsInput| match input {
            TlsInput::ClientCert => Some(entry.client_cert.clone()),
            TlsInput::ClientKey => Some(entry.client_key.clone()),
            TlsInput::P12 => Some(entry.client_p12.clone()),
            TlsInput::P12Password => Some(entry.client_p12_password.clone()),
            TlsInput::ExtraRoot => None,
        };
        let inputs = [
            (TlsInput::ClientCert, "client_cert"),
            (TlsInput::ClientKey, "client_key"),
            (TlsInput::P12, "client_p12"),
            (TlsInput::P12Password, "client_p12_password"),
            (TlsInput::ExtraRoot, TlsInput::ExtraRoot.env_var()),
        ];
        Self::from_lookup(
            |var| match inputs.iter().find(|(input, _)| input.env_var() == var) {
                Some((input, _)) => match field(*input) {
                    Some(value) => Ok(value),
                    None => optional(var),
                },
                None => optional(var),
            },
            &entry.merchant.mch_id,
        )
        .map_err(|e| {
            let what = inputs
                .iter()
                .find(|(input, _)| input.env_var() == e.var)
                .map_or(e.var, |(_, name)| *name);
            ConfigError::new(
                "MERCHANTS_FILE",
                format!("merchant {}: {what} {}", entry.name, e.reason),
            )
        })
    }

    /// [`Self::from_env`] over any source of variables (tests pass a map).
    pub(crate) fn from_lookup(
        get: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
        mch_id: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let cert = get(TlsInput::ClientCert.env_var())?;
        let key = get(TlsInput::ClientKey.env_var())?;
        let p12 = get(TlsInput::P12.env_var())?;
        // Held as a secret so that it is wiped when dropped and can never be printed.
        let password = get(TlsInput::P12Password.env_var())?.map(SecretString::from);
        let root = get(TlsInput::ExtraRoot.env_var())?;

        let identity = match (cert, key, p12) {
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    TlsInput::P12.env_var(),
                    "cannot be used together with WECHAT_CLIENT_CERT and WECHAT_CLIENT_KEY: set one or the other",
                ))
            }
            (Some(_), None, _) => {
                return Err(ConfigError::new(
                    TlsInput::ClientKey.env_var(),
                    "must be set together with WECHAT_CLIENT_CERT",
                ))
            }
            (None, Some(_), _) => {
                return Err(ConfigError::new(
                    TlsInput::ClientCert.env_var(),
                    "must be set together with WECHAT_CLIENT_KEY",
                ))
            }
            (Some(cert), Some(key), None) => {
                if password.is_some() {
                    return Err(password_without_p12());
                }
                Some(
                    Self::from_pem_files(Path::new(&cert), Path::new(&key))
                        .map_err(TlsError::into_config_error)?,
                )
            }
            (None, None, Some(p12)) => {
                let given = password.as_ref().map(|p| p.expose_secret());
                let opened = Self::from_p12_file(Path::new(&p12), given.unwrap_or(mch_id));
                Some(opened.map_err(|e| match (e.input, given) {
                    (TlsInput::P12Password, None) => ConfigError::new(
                        TlsInput::P12Password.env_var(),
                        "is not set, and its default (WECHAT_MCH_ID, the password WeChat issues the file with) does not open WECHAT_CLIENT_P12",
                    ),
                    _ => e.into_config_error(),
                })?)
            }
            (None, None, None) => {
                if password.is_some() {
                    return Err(password_without_p12());
                }
                None
            }
        };
        let tls = match (identity, root) {
            (identity, Some(root)) => Some(
                identity
                    .unwrap_or_default()
                    .with_extra_root_file(Path::new(&root))
                    .map_err(TlsError::into_config_error)?,
            ),
            (identity, None) => identity,
        };
        Ok(tls)
    }

    /// Checks the chain and key once (a key that does not belong to the
    /// certificate, or that rustls cannot sign with, fails here and not on the
    /// first refund), then keeps them as a reqwest identity.
    fn from_der(
        certs: &[CertificateDer<'_>],
        key: &PrivateKeyDer<'_>,
        key_input: TlsInput,
    ) -> Result<Self, TlsError> {
        let (label, key_der) = match key {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            _ => return Err(TlsError::new(key_input, "is of an unsupported kind")),
        };
        // reqwest (with rustls) takes an identity only as PEM: write the chain
        // and the key out again, into buffers that are wiped when dropped.
        // Room for all of it up front (base64 grows 4/3, plus line breaks and
        // armour), so that no growth leaves an unwiped copy behind.
        let der_len: usize = certs.iter().map(|c| c.len()).sum::<usize>() + key_der.len();
        let mut pem = Zeroizing::new(String::with_capacity(2 * der_len + 512));
        for cert in certs {
            pem_block(&mut pem, "CERTIFICATE", cert);
        }
        pem_block(&mut pem, label, key_der);
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|_| TlsError::new(key_input, "could not be read with its certificate"))?;
        reqwest::Client::builder()
            .use_rustls_tls()
            .identity(identity.clone())
            .build()
            .map_err(|_| {
                TlsError::new(
                    key_input,
                    "does not belong to the client certificate (or is a kind of key TLS cannot sign with)",
                )
            })?;
        Ok(Self {
            identity: Some(identity),
            extra_roots: Vec::new(),
        })
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.identity.is_some())
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

fn password_without_p12() -> ConfigError {
    ConfigError::new(
        TlsInput::P12Password.env_var(),
        "is set but WECHAT_CLIENT_P12 is not",
    )
}

/// Every CERTIFICATE block in `pem`; at least one.
fn certificates(pem: &[u8], input: TlsInput) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::new(input, "is not valid PEM"))?;
    if certs.is_empty() {
        return Err(TlsError::new(input, "holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

fn read(path: &Path, input: TlsInput) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError::new(
            input,
            format!("cannot be read from {}: {e}", path.display()),
        )
    })
}

/// Appends a DER item to `out` as a PEM block, in lines of 64 characters as
/// RFC 7468 writes them.
fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    let mut b64 = Zeroizing::new(String::new());
    base64::engine::general_purpose::STANDARD.encode_string(der, &mut b64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 is ASCII, so splitting at any byte keeps each line valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MCH_ID: &str = "1900000109";
    const CERT: &[u8] = include_bytes!("testdata/apiclient_cert.pem");
    const KEY: &[u8] = include_bytes!("testdata/apiclient_key.pem");
    const OTHER_KEY: &[u8] = include_bytes!("testdata/other_key.pem");
    const LEGACY_P12: &[u8] = include_bytes!("testdata/apiclient_cert.p12");
    const MODERN_P12: &[u8] = include_bytes!("testdata/modern.p12");

    fn testdata(name: &str) -> String {
        format!("{}/src/wechat/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// `ClientTls::from_lookup` over exactly these variables.
    fn from_vars(vars: &[(&'static str, String)]) -> Result<Option<ClientTls>, ConfigError> {
        let map: HashMap<&'static str, String> = vars.iter().cloned().collect();
        ClientTls::from_lookup(|var| Ok(map.get(var).cloned()), MCH_ID)
    }

    fn config_error(vars: &[(&'static str, String)]) -> ConfigError {
        match from_vars(vars) {
            Err(e) => e,
            Ok(tls) => panic!("expected a configuration error, got {tls:?}"),
        }
    }

    /// Nothing of the key or the password may reach an error message.
    fn assert_no_secret(message: &str) {
        let key_body = String::from_utf8_lossy(KEY);
        let key_line = key_body.lines().nth(1).expect("a base64 line");
        assert!(!message.contains(key_line), "{message}");
        assert!(!message.contains("BEGIN"), "{message}");
        assert!(!message.contains("wrong-password"), "{message}");
    }

    #[test]
    fn a_pem_pair_becomes_a_client_identity() {
        let tls = ClientTls::from_pem(CERT, KEY).expect("valid pair");
        assert!(tls.has_identity());
        assert_eq!(
            format!("{tls:?}"),
            "ClientTls { client_certificate: true, extra_roots: 0 }"
        );
    }

    #[test]
    fn wechats_legacy_p12_opens_with_the_mch_id() {
        let tls = ClientTls::from_p12(LEGACY_P12, MCH_ID).expect("RC2-40 / 3DES p12 opens");
        assert!(tls.has_identity());
    }

    #[test]
    fn a_modern_aes_p12_opens_too() {
        let tls = ClientTls::from_p12(MODERN_P12, MCH_ID).expect("PBES2 p12 opens");
        assert!(tls.has_identity());
    }

    #[test]
    fn a_wrong_p12_password_is_named_and_not_echoed() {
        let e = ClientTls::from_p12(LEGACY_P12, "wrong-password").expect_err("refused");
        assert_eq!(e.input, TlsInput::P12Password);
        assert_no_secret(&e.to_string());

        let e = config_error(&[
            ("WECHAT_CLIENT_P12", testdata("apiclient_cert.p12")),
            ("WECHAT_CLIENT_P12_PASSWORD", "wrong-password".into()),
        ]);
        assert_eq!(e.var, "WECHAT_CLIENT_P12_PASSWORD");
        assert!(
            e.to_string().contains("does not open WECHAT_CLIENT_P12"),
            "{e}"
        );
        assert_no_secret(&e.to_string());
    }

    #[test]
    fn the_p12_password_defaults_to_the_mch_id() {
        let tls = from_vars(&[("WECHAT_CLIENT_P12", testdata("apiclient_cert.p12"))])
            .expect("opens with the mch_id")
            .expect("configured");
        assert!(tls.has_identity());

        // Another merchant's default does not open it, and the error says which default was tried.
        let map: HashMap<&'static str, String> =
            HashMap::from([("WECHAT_CLIENT_P12", testdata("apiclient_cert.p12"))]);
        let e = ClientTls::from_lookup(|var| Ok(map.get(var).cloned()), "1230000109")
            .expect_err("wrong default");
        assert_eq!(e.var, "WECHAT_CLIENT_P12_PASSWORD");
        assert!(e.reason.contains("WECHAT_MCH_ID"), "{e}");
    }

    #[test]
    fn a_missing_file_names_its_variable() {
        for (var, vars) in [
            (
                "WECHAT_CLIENT_CERT",
                vec![
                    (
                        "WECHAT_CLIENT_CERT",
                        "/nonexistent/apiclient_cert.pem".to_owned(),
                    ),
                    ("WECHAT_CLIENT_KEY", testdata("apiclient_key.pem")),
                ],
            ),
            (
                "WECHAT_CLIENT_KEY",
                vec![
                    ("WECHAT_CLIENT_CERT", testdata("apiclient_cert.pem")),
                    (
                        "WECHAT_CLIENT_KEY",
                        "/nonexistent/apiclient_key.pem".to_owned(),
                    ),
                ],
            ),
            (
                "WECHAT_CLIENT_P12",
                vec![(
                    "WECHAT_CLIENT_P12",
                    "/nonexistent/apiclient_cert.p12".to_owned(),
                )],
            ),
            (
                "WECHAT_EXTRA_ROOT_CA",
                vec![("WECHAT_EXTRA_ROOT_CA", "/nonexistent/ca.pem".to_owned())],
            ),
        ] {
            let e = config_error(&vars);
            assert_eq!(e.var, var, "{e}");
            assert!(e.reason.contains("/nonexistent/"), "{e}");
        }
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let e = config_error(&[("WECHAT_CLIENT_CERT", testdata("apiclient_cert.pem"))]);
        assert_eq!(e.var, "WECHAT_CLIENT_KEY");
        let e = config_error(&[("WECHAT_CLIENT_KEY", testdata("apiclient_key.pem"))]);
        assert_eq!(e.var, "WECHAT_CLIENT_CERT");

        let e = ClientTls::from_pem(CERT, CERT).expect_err("no key in a certificate file");
        assert_eq!(e.input, TlsInput::ClientKey);
        assert!(e.reason.contains("no PEM private key"), "{e}");
    }

    #[test]
    fn a_key_file_given_as_the_certificate_is_refused_without_echoing_it() {
        let e = ClientTls::from_pem(KEY, KEY).expect_err("a key is no certificate");
        assert_eq!(e.input, TlsInput::ClientCert);
        assert_no_secret(&e.to_string());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let e = ClientTls::from_pem(CERT, OTHER_KEY).expect_err("mismatch");
        assert_eq!(e.input, TlsInput::ClientKey);
        assert!(e.reason.contains("does not belong"), "{e}");
        assert_no_secret(&e.to_string());
    }

    #[test]
    fn a_pem_pair_and_a_p12_together_are_refused() {
        let e = config_error(&[
            ("WECHAT_CLIENT_CERT", testdata("apiclient_cert.pem")),
            ("WECHAT_CLIENT_KEY", testdata("apiclient_key.pem")),
            ("WECHAT_CLIENT_P12", testdata("apiclient_cert.p12")),
        ]);
        assert_eq!(e.var, "WECHAT_CLIENT_P12");
        let e = config_error(&[("WECHAT_CLIENT_P12_PASSWORD", MCH_ID.into())]);
        assert_eq!(e.var, "WECHAT_CLIENT_P12_PASSWORD");
    }

    #[test]
    fn an_extra_root_alone_trusts_without_an_identity() {
        let tls = from_vars(&[("WECHAT_EXTRA_ROOT_CA", testdata("apiclient_cert.pem"))])
            .expect("a CA file")
            .expect("configured");
        assert!(!tls.has_identity());
        assert_eq!(
            format!("{tls:?}"),
            "ClientTls { client_certificate: false, extra_roots: 1 }"
        );

        let e = ClientTls::trusting(b"not a certificate").expect_err("no PEM");
        assert_eq!(e.input, TlsInput::ExtraRoot);
    }

    #[test]
    fn nothing_set_is_no_tls_configuration() {
        assert!(from_vars(&[]).expect("fine").is_none());
    }

    #[test]
    fn a_p12_that_is_not_one_is_named() {
        let e = ClientTls::from_p12(CERT, MCH_ID).expect_err("PEM is not PKCS#12");
        assert_eq!(e.input, TlsInput::P12);
        assert_eq!(e.into_config_error().var, "WECHAT_CLIENT_P12");
    }
}
