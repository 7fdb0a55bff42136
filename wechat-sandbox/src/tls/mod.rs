//! The sandbox's TLS side, as WeChat's API host is for `/secapi/`: where its
//! certificates come from (a CA, a server certificate and each account's client
//! certificate generated at start, or PEM files it is given), the files it hands
//! the merchants (PEM and WeChat's `apiclient_cert.p12`), and serving the same
//! router over rustls with client authentication optional. It records who
//! presented which verified certificate; what a missing one means for a request
//! is `client_auth`'s rule, not this module's.

mod material;
mod serve;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

pub(crate) use material::{prepare, Prepared};
pub use material::{ClientFiles, IssuedCert, TestCa, TlsFiles};
pub(crate) use serve::serve;

/// Where the binary's TLS listener binds unless `SANDBOX_TLS_ADDR` says otherwise.
pub const DEFAULT_TLS_ADDR: &str = "127.0.0.1:8443";

/// The TLS listener: its address and its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Port 0 picks a free one (the default outside the binary, so that tests
    /// and the in-process stack never collide).
    pub addr: SocketAddr,
    pub source: TlsSource,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            source: TlsSource::default(),
        }
    }
}

/// Where the listener's certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A fresh test CA, a server certificate for 127.0.0.1, ::1 and localhost,
    /// and a client certificate per hosted account (CN = its mch_id), all
    /// issued at start and written into `dir` (`None`: a new temporary
    /// directory, removed when the sandbox stops). Files: `ca.pem`,
    /// `server.pem`, `server.key`; the default merchant's `client.pem`,
    /// `client.key`, `client.p12`; every further account's
    /// `client-{mch_id}.pem`, `.key`, `.p12` (p12 password = the mch_id, as
    /// WeChat issues it).
    Generate { dir: Option<PathBuf> },
    /// Given PEM files: client certificates are verified against `ca`; the
    /// server presents `cert` (its chain) with `key`. No client files are made.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

impl Default for TlsSource {
    fn default() -> Self {
        TlsSource::Generate { dir: None }
    }
}
