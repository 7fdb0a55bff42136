//! The certificates: issuing them with rcgen (a throwaway CA, the server's and
//! one client certificate per hosted account), writing each account's files, loading given
//! ones, and the rustls server configuration that asks for, but does not
//! require, a client certificate verified against the CA.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use p12_keystore::{
    Certificate as P12Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm,
    PrivateKeyChain,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use secrecy::{ExposeSecret, SecretString};
use tempfile::TempDir;

use super::TlsSource;

/// The names the server certificate is valid for: the addresses a local client
/// dials. (A container deployment would need its service name here too.)
const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// A throwaway certificate authority (ECDSA P-256, as rcgen with ring issues;
/// WeChat's own are RSA, which no TLS client here treats differently). The
/// sandbox makes one at start; tests make more to play a stranger's CA.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    /// A server certificate for `names` (IP addresses or DNS names).
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, rcgen::Error> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = name("wechat-sandbox");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A TLS client certificate whose subject CN is `common_name` (WeChat
    /// writes the merchant's mch_id there).
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert, key })
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate [`TestCa`] issued, with its private key (PKCS#8).
pub struct IssuedCert {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl IssuedCert {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    pub fn key_pem(&self) -> SecretString {
        SecretString::from(self.key.serialize_pem())
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "wechat-sandbox (test only)");
    dn
}

/// What a merchant needs to call the TLS listener: the CA to trust and, when
/// the sandbox issued them, each account's client certificate and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: Option<PathBuf>,
    ca_path: PathBuf,
    ca_pem: String,
    /// The default merchant's (the first mch_id `prepare` was given).
    client: Option<ClientFiles>,
    /// Every account's, by mch_id (the default's included).
    clients: BTreeMap<String, ClientFiles>,
}

impl TlsFiles {
    /// Where the generated files are (`None` for given files).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The CA that signed the server certificate and verifies client
    /// certificates (with given files: `SANDBOX_TLS_CA`).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The default merchant's client certificate, when the sandbox issued one.
    pub fn client(&self) -> Option<&ClientFiles> {
        self.client.as_ref()
    }

    /// The client certificate of the account `mch_id`, when the sandbox issued one.
    pub fn client_for(&self, mch_id: &str) -> Option<&ClientFiles> {
        self.clients.get(mch_id)
    }

    /// Every issued client certificate, by mch_id.
    pub fn clients(&self) -> impl Iterator<Item = (&str, &ClientFiles)> {
        self.clients.iter().map(|(m, c)| (m.as_str(), c))
    }
}

/// The merchant's API client certificate as WeChat hands it out: PEM pair
/// (`apiclient_cert.pem` + `apiclient_key.pem`) and PKCS#12 (`apiclient_cert.p12`).
#[derive(Debug, Clone)]
pub struct ClientFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    p12_path: PathBuf,
    cert_pem: String,
    key_pem: SecretString,
    p12_password: String,
}

impl ClientFiles {
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    pub fn p12_path(&self) -> &Path {
        &self.p12_path
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// The p12's password: the mch_id, as WeChat's.
    pub fn p12_password(&self) -> &str {
        &self.p12_password
    }
}

/// Why the TLS side cannot start, naming the variable that would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var} {reason}")]
pub(crate) struct SetupError {
    pub var: &'static str,
    pub reason: String,
}

impl SetupError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// The server configuration, the files, and the temporary directory that must
/// live as long as the listener (dropping it removes the files).
pub(crate) struct Prepared {
    pub config: Arc<ServerConfig>,
    pub files: TlsFiles,
    pub temp_dir: Option<TempDir>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Issues or loads the certificates; a generated set has one client
/// certificate per account in `mch_ids` (the first is the default merchant).
pub(crate) fn prepare(source: &TlsSource, mch_ids: &[&str]) -> Result<Prepared, SetupError> {
    match source {
        TlsSource::Generate { dir } => generate(dir.as_deref(), mch_ids),
        TlsSource::Files { ca, cert, key } => load(ca, cert, key),
    }
}

const DIR: &str = "SANDBOX_TLS_DIR";

fn issue_failed(e: rcgen::Error) -> SetupError {
    SetupError::new(DIR, format!("certificates could not be issued: {e}"))
}

fn generate(dir: Option<&Path>, mch_ids: &[&str]) -> Result<Prepared, SetupError> {
    let ca = TestCa::new("wechat-sandbox test CA").map_err(issue_failed)?;
    let server = ca.issue_server(&SERVER_NAMES).map_err(issue_failed)?;

    let (dir, temp_dir) = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                SetupError::new(DIR, format!("{} cannot be created: {e}", dir.display()))
            })?;
            (dir.to_path_buf(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("wechat-sandbox-tls-")
                .tempdir()
                .map_err(|e| {
                    SetupError::new(
                        DIR,
                        format!("is not set and no temporary directory could be made: {e}"),
                    )
                })?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let ca_pem = ca.cert_pem();
    let ca_path = write(&dir, "ca.pem", ca_pem.as_bytes(), false)?;
    write(&dir, "server.pem", server.cert_pem().as_bytes(), false)?;
    write(
        &dir,
        "server.key",
        server.key_pem().expose_secret().as_bytes(),
        true,
    )?;
    // The default merchant's files keep their plain names (client.pem, …);
    // every further account's carry its mch_id (client-1900000200.pem, …).
    let mut clients = BTreeMap::new();
    let mut default_client = None;
    for (i, mch_id) in mch_ids.iter().enumerate() {
        if clients.contains_key(*mch_id) {
            continue;
        }
        let stem = if i == 0 {
            "client".to_owned()
        } else {
            format!("client-{mch_id}")
        };
        let files = issue_client_files(&ca, &dir, &stem, mch_id)?;
        if i == 0 {
            default_client = Some(files.clone());
        }
        clients.insert((*mch_id).to_owned(), files);
    }

    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| SetupError::new(DIR, format!("the generated CA is unusable: {e}")))?;
    let config = server_config(roots, vec![server.cert_der().clone()], server.key_der())
        .map_err(|reason| SetupError::new(DIR, reason))?;
    Ok(Prepared {
        config,
        files: TlsFiles {
            dir: Some(dir),
            ca_path,
            ca_pem,
            client: default_client,
            clients,
        },
        temp_dir,
    })
}

/// One account's client certificate (CN = its mch_id, as WeChat issues
/// them), written as `{stem}.pem`, `{stem}.key` and `{stem}.p12`.
fn issue_client_files(
    ca: &TestCa,
    dir: &Path,
    stem: &str,
    mch_id: &str,
) -> Result<ClientFiles, SetupError> {
    let client = ca.issue_client(mch_id).map_err(issue_failed)?;
    let p12 = pkcs12(&client, ca.cert_der(), mch_id)
        .map_err(|e| SetupError::new(DIR, format!("{stem}.p12 could not be written: {e}")))?;
    let key_pem = client.key_pem();
    let cert_pem = client.cert_pem();
    let cert_path = write(dir, &format!("{stem}.pem"), cert_pem.as_bytes(), false)?;
    let key_path = write(
        dir,
        &format!("{stem}.key"),
        key_pem.expose_secret().as_bytes(),
        true,
    )?;
    let p12_path = write(dir, &format!("{stem}.p12"), &p12, true)?;
    Ok(ClientFiles {
        cert_path,
        key_path,
        p12_path,
        cert_pem,
        key_pem,
        p12_password: mch_id.to_owned(),
    })
}

/// The merchant's key and certificate (with the CA after it) as PKCS#12,
/// encrypted the legacy way WeChat's `apiclient_cert.p12` is (3DES under a
/// SHA-1 PKCS#12 KDF, HMAC-SHA1 MAC), so a client must handle that format.
fn pkcs12(
    client: &IssuedCert,
    ca: &CertificateDer<'_>,
    password: &str,
) -> Result<Vec<u8>, p12_keystore::error::Error> {
    let chain = PrivateKeyChain::new(
        client.key.serialize_der(),
        // Any identifier that links the key bag to its certificate bag will do.
        password.as_bytes(),
        [
            P12Certificate::from_der(client.cert_der())?,
            P12Certificate::from_der(ca)?,
        ],
    );
    let mut store = KeyStore::new();
    store.add_entry("apiclient_cert", KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .encryption_iterations(2048)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .mac_iterations(2048)
        .write()
}

/// Writes `name` into `dir`; keys and the p12 readable by the owner only, from
/// the moment the file exists (SANDBOX_TLS_DIR may be a shared directory).
fn write(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<PathBuf, SetupError> {
    use std::io::Write as _;

    let path = dir.join(name);
    let failed = |e: std::io::Error| {
        SetupError::new(
            "SANDBOX_TLS_DIR",
            format!("{} cannot be written: {e}", path.display()),
        )
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let mut file = options.open(&path).map_err(failed)?;
        // The mode above applies only to a new file; one left by an earlier run keeps its own.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(failed)?;
        file.write_all(bytes).map_err(failed)?;
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        options
            .open(&path)
            .and_then(|mut file| file.write_all(bytes))
            .map_err(failed)?;
    }
    Ok(path)
}

fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Prepared, SetupError> {
    let read = |var: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            SetupError::new(var, format!("cannot be read from {}: {e}", path.display()))
        })
    };
    let certs = |var: &'static str, pem: &[u8]| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SetupError::new(var, "is not valid PEM"))?;
        if certs.is_empty() {
            return Err(SetupError::new(var, "holds no PEM CERTIFICATE"));
        }
        Ok(certs)
    };
    let ca_bytes = read("SANDBOX_TLS_CA", ca)?;
    let ca_pem = String::from_utf8(ca_bytes)
        .map_err(|_| SetupError::new("SANDBOX_TLS_CA", "is not PEM text"))?;
    let mut roots = RootCertStore::empty();
    for der in certs("SANDBOX_TLS_CA", ca_pem.as_bytes())? {
        roots.add(der).map_err(|e| {
            SetupError::new(
                "SANDBOX_TLS_CA",
                format!("is not a usable CA certificate: {e}"),
            )
        })?;
    }
    let chain = certs("SANDBOX_TLS_CERT", &read("SANDBOX_TLS_CERT", cert)?)?;
    // Never echo a key file, not even a line of it.
    let key_der = PrivateKeyDer::from_pem_slice(&read("SANDBOX_TLS_KEY", key)?)
        .map_err(|_| SetupError::new("SANDBOX_TLS_KEY", "holds no PEM private key"))?;
    let config = server_config(roots, chain, key_der)
        .map_err(|reason| SetupError::new("SANDBOX_TLS_KEY", reason))?;
    Ok(Prepared {
        config,
        files: TlsFiles {
            dir: None,
            ca_path: ca.to_path_buf(),
            ca_pem,
            client: None,
            clients: BTreeMap::new(),
        },
        temp_dir: None,
    })
}

/// TLS 1.2 and 1.3 with ring (the provider the product's reqwest uses), ALPN
/// for HTTP/2 and HTTP/1.1, and client authentication that is asked for but
/// optional: a certificate that is presented must chain to `roots` (else the
/// handshake fails), and a connection without one is served, its `/secapi/`
/// requests refused by `client_auth` as WeChat refuses them.
fn server_config(
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("cannot verify client certificates: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot be used for TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("does not match the certificate, or is not a usable key ({e})"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
