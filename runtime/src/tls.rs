//! Optional TLS for the gRPC servers (`TLS_CERT` + `TLS_KEY`, PEM paths): the
//! certificate chain and key are read and checked once at start-up, so a
//! missing file or a key that does not parse stops the service with one line
//! naming the variable, never a handshake failure later. tonic serves them over
//! rustls (the TLS stack reqwest already brings in).

use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::{optional, ConfigError};

/// A server certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("ServerTls")
            .field("cert_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `TLS_CERT` and `TLS_KEY` (both or neither); `None` serves plaintext.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        match (optional("TLS_CERT")?, optional("TLS_KEY")?) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::new(
                "TLS_KEY",
                "is required when TLS_CERT is set",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "TLS_CERT",
                "is required when TLS_KEY is set",
            )),
            (Some(cert), Some(key)) => {
                let cert_pem = read("TLS_CERT", &cert)?;
                let key_pem = read("TLS_KEY", &key)?;
                Self::from_pem(cert_pem, key_pem).map(Some)
            }
        }
    }

    /// Checks that `cert_pem` holds at least one certificate and `key_pem` one
    /// private key.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, ConfigError> {
        if !has_block(&cert_pem, "CERTIFICATE") {
            return Err(ConfigError::new(
                "TLS_CERT",
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        if !has_block(&key_pem, "PRIVATE KEY") {
            return Err(ConfigError::new(
                "TLS_KEY",
                "holds no PEM private key (-----BEGIN … PRIVATE KEY-----)",
            ));
        }
        Ok(Self { cert_pem, key_pem })
    }

    /// The configuration tonic's server builder takes.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

fn read(var: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(var, format!("cannot read {path}: {e}")))
}

/// Whether `pem` has a `-----BEGIN …{label}-----` line (`PRIVATE KEY` also
/// matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn has_block(pem: &[u8], label: &str) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_the_right_block_is_refused_naming_the_variable() {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".to_vec();
        assert!(ServerTls::from_pem(cert.clone(), key.clone()).is_ok());
        let err = ServerTls::from_pem(key.clone(), key.clone()).expect_err("a key as cert");
        assert_eq!(err.var, "TLS_CERT");
        let err = ServerTls::from_pem(cert.clone(), cert).expect_err("a cert as key");
        assert_eq!(err.var, "TLS_KEY");
        let ec = b"-----BEGIN EC PRIVATE KEY-----\n".to_vec();
        assert!(has_block(&ec, "PRIVATE KEY"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let tls = ServerTls::from_pem(
            b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            b"-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n".to_vec(),
        )
        .expect("valid");
        assert!(!format!("{tls:?}").contains("SECRET"));
    }
}
