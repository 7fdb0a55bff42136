//! The wire under every v3 call: one reqwest client per API base (rustls, the
//! timeouts, an extra trusted root CA for a private WeChat stand-in), and
//! [`V3Http::send_signed`], which signs a request for one merchant, sends it,
//! re-sends it on what a retry can fix, reads at most a capped number of
//! bytes, and turns a non-2xx answer into a typed [`V3Error`]. It does not
//! verify 2xx answers and parses none of their bytes: that is the caller's
//! first step ([`crate::V3Client`], the certificate download).

use std::{fmt, path::Path, sync::Arc, time::Duration};

use reqwest::{
    header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT},
    Method, Url,
};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use wxpay_core::{
    domain::Nonce,
    wechat::v3::{models::ErrorBody, sign, MerchantSigner, SignedHeaders},
};

use crate::V3Error;

/// What this client tells WeChat it is (v3 requires a User-Agent).
pub const USER_AGENT_VALUE: &str = concat!(
    "wxpay-wechat-v3/",
    env!("CARGO_PKG_VERSION"),
    " (rust; reqwest)"
);

/// The most of a JSON answer read: WeChat's are a few KiB (a certificate
/// list with two certificates is about 4 KiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 128 * 1024;

/// Timeouts, retries and trust. The defaults suit WeChat's production API and
/// match payment-service's v2 client.
#[derive(Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// For one attempt, from sending to the last byte.
    pub request_timeout: Duration,
    /// Attempts in all, for what [`V3Error::is_retryable`] says a retry can fix.
    pub max_attempts: u32,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
    /// Larger answers are refused ([`V3Error::BadReply`]) without reading on.
    pub max_response_bytes: usize,
    /// CAs trusted for the API's host besides the public roots; add them
    /// with [`Self::trust_root_pem`], which checks them.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Duration::from_millis(200),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_roots: Vec::new(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// Why a client could not be built: a configuration problem, found at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the API base {0:?} is not an http(s) URL without query or fragment")]
    Base(String),
    #[error("the extra root CA {0}")]
    ExtraRoot(String),
    #[error("merchant {0} is not a v3 merchant (api_version = \"v3\")")]
    NotV3(String),
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

impl ClientOptions {
    /// Also trusts the CA certificate(s) in `pem` for the API's host, besides
    /// the public roots (WECHAT_EXTRA_ROOT_CA: the sandbox's own CA). Checked
    /// now, as payment-service checks it: a certificate rustls cannot take as
    /// a trust anchor would otherwise fail only when the client is built.
    pub fn trust_root_pem(mut self, pem: &[u8]) -> Result<Self, BuildError> {
        let ders = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BuildError::ExtraRoot("is not valid PEM".into()))?;
        if ders.is_empty() {
            return Err(BuildError::ExtraRoot("holds no PEM CERTIFICATE".into()));
        }
        for der in ders {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|_| BuildError::ExtraRoot("is not a usable certificate".into()))?;
            self.extra_roots.push(cert);
        }
        let mut check = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        for root in &self.extra_roots {
            check = check.add_root_certificate(root.clone());
        }
        check
            .build()
            .map_err(|_| BuildError::ExtraRoot("is not a usable CA certificate".into()))?;
        Ok(self)
    }

    /// [`Self::trust_root_pem`] from a file.
    pub fn trust_root_file(self, path: &Path) -> Result<Self, BuildError> {
        let pem = std::fs::read(path).map_err(|e| {
            BuildError::ExtraRoot(format!("cannot be read from {}: {e}", path.display()))
        })?;
        self.trust_root_pem(&pem)
    }
}

/// One API base (`WECHAT_API_BASE`) and the HTTP client every merchant's
/// calls to it share (one connection pool). Cheap to clone.
#[derive(Clone, Debug)]
pub struct V3Http {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Without a trailing slash; paths are appended to it.
    base: String,
    options: ClientOptions,
}

/// A 2xx answer as received: not yet verified, not parsed.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The `Wechatpay-*` headers, as core verifies them.
    pub fn signed_headers(&self) -> SignedHeaders<'_> {
        SignedHeaders::from_fn(|name| self.headers.get(name).and_then(|v| v.to_str().ok()))
    }
}

/// What one request is: who signs it and what it says. Signed afresh on
/// every attempt (a new timestamp and nonce), as v3 intends.
pub(crate) struct Signed<'a> {
    pub signer: &'a MerchantSigner,
    /// The account that signs (the provider's in service-provider mode).
    pub mch_id: &'a str,
    pub method: Method,
    pub url: Url,
    /// JSON, or empty (a GET).
    pub body: &'a str,
    /// `Wechatpay-Serial`: the WeChat key we verify the answer with.
    pub wechatpay_serial: Option<&'a str>,
    pub max_bytes: usize,
}

impl V3Http {
    /// A client for `api_base` (`https://api.mch.weixin.qq.com`, or the
    /// sandbox). Redirects are not followed: v3 has none, and following one
    /// would send a signed request somewhere we did not choose.
    pub fn new(api_base: &str, options: ClientOptions) -> Result<Self, BuildError> {
        let base = api_base.trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|_| BuildError::Base(api_base.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.host_str().is_none()
        {
            return Err(BuildError::Base(api_base.to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT_VALUE);
        for root in &options.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base.to_owned(),
                options,
            }),
        })
    }

    /// The API base, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// `base` + `path_and_query`, which must be a v3 path (`/v3/…`).
    pub(crate) fn url(&self, path_and_query: &str) -> Result<Url, V3Error> {
        if !path_and_query.starts_with("/v3/") {
            return Err(V3Error::Request(format!(
                "{path_and_query:?} is not a v3 path (/v3/…)"
            )));
        }
        Url::parse(&format!("{}{path_and_query}", self.inner.base))
            .map_err(|_| V3Error::Request(format!("{path_and_query:?} does not make a URL")))
    }

    /// An absolute URL WeChat handed us (a bill's `download_url`), accepted
    /// only on the API's own origin: a signed request goes nowhere else.
    pub(crate) fn same_origin(&self, url: &str) -> Result<Url, V3Error> {
        let parsed = Url::parse(url)
            .map_err(|_| V3Error::BadReply("the download URL is not a URL".into()))?;
        let base = Url::parse(&self.inner.base)
            .map_err(|_| V3Error::Request("the API base is not a URL".into()))?;
        if parsed.origin() != base.origin() {
            return Err(V3Error::BadReply(
                "the download URL is not on the API's origin".into(),
            ));
        }
        Ok(parsed)
    }

    /// Signs, sends and re-sends (on what a retry can fix) one request;
    /// returns the 2xx answer unverified.
    pub(crate) async fn send_signed(&self, req: &Signed<'_>) -> Result<Answer, V3Error> {
        let options = &self.inner.options;
        let mut attempt = 1;
        loop {
            match self.send_once(req).await {
                Err(e) if e.is_retryable() && attempt < options.max_attempts => {
                    tracing::warn!(error = %e, attempt, path = req.url.path(),
                        "WeChat Pay v3 call failed; sending it again, signed afresh");
                    tokio::time::sleep(options.backoff * 2u32.saturating_pow(attempt - 1)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(&self, req: &Signed<'_>) -> Result<Answer, V3Error> {
        // The signature covers the request URI exactly as sent: the parsed
        // URL's own serialization, so percent-encoding cannot make them differ.
        let uri = match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_owned(),
        };
        let timestamp = chrono::Utc::now().timestamp();
        let nonce = Nonce::generate();
        let authorization = sign::authorization(
            req.signer,
            req.mch_id,
            req.method.as_str(),
            &uri,
            timestamp,
            nonce.as_str(),
            req.body,
        )
        .map_err(|e| V3Error::Request(format!("signing failed: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, header_value(&authorization)?);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if !req.body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(serial) = req.wechatpay_serial {
            headers.insert("wechatpay-serial", header_value(serial)?);
        }
        let response = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(headers)
            .body(req.body.to_owned())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_capped(response, req.max_bytes).await?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) if !e.code.is_empty() => V3Error::Api {
                status,
                code: clip(&e.code, 64),
                message: clip(&e.message, 256),
            },
            _ => V3Error::Status { status },
        })
    }
}

fn header_value(s: &str) -> Result<HeaderValue, V3Error> {
    HeaderValue::from_str(s).map_err(|_| V3Error::Request("a header is not valid text".into()))
}

/// Reads the body, refusing it as soon as it passes `max` bytes (a
/// Content-Length is not trusted to tell the truth).
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, V3Error> {
    let too_large = || V3Error::BadReply(format!("the answer is larger than {max} bytes"));
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An unsigned error text, kept short: it reaches logs and callers' messages.
fn clip(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn transport_error(e: reqwest::Error) -> V3Error {
    if e.is_timeout() {
        V3Error::Timeout
    } else {
        // reqwest's Display names the URL, never a header or the body: no
        // signature or secret reaches the message.
        V3Error::Transport(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_bases_without_query_are_accepted() {
        assert!(V3Http::new("https://api.mch.weixin.qq.com/", ClientOptions::default()).is_ok());
        for bad in [
            "api.mch.weixin.qq.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            assert_eq!(
                V3Http::new(bad, ClientOptions::default()).expect_err(bad),
                BuildError::Base(bad.to_owned())
            );
        }
    }

    #[test]
    fn paths_must_be_v3_and_downloads_must_stay_on_the_origin() {
        let http =
            V3Http::new("https://api.mch.weixin.qq.com", ClientOptions::default()).expect("client");
        assert_eq!(
            http.url("/v3/certificates").expect("url").as_str(),
            "https://api.mch.weixin.qq.com/v3/certificates"
        );
        assert!(matches!(
            http.url("/pay/orderquery"),
            Err(V3Error::Request(_))
        ));
        assert!(http
            .same_origin("https://api.mch.weixin.qq.com/v3/billdownload/file?token=t")
            .is_ok());
        assert!(matches!(
            http.same_origin("https://evil.example/v3/billdownload/file"),
            Err(V3Error::BadReply(_))
        ));
        assert!(matches!(
            http.same_origin("http://api.mch.weixin.qq.com/v3/billdownload/file"),
            Err(V3Error::BadReply(_))
        ));
    }

    #[test]
    fn an_extra_root_must_be_a_certificate() {
        assert!(matches!(
            ClientOptions::default().trust_root_pem(b"not pem"),
            Err(BuildError::ExtraRoot(_))
        ));
        let pem = include_bytes!("../../core/tests/testdata/v3/platform_cert.pem");
        let options = ClientOptions::default()
            .trust_root_pem(pem)
            .expect("a self-signed certificate is a root");
        assert_eq!(options.extra_roots.len(), 1);
        assert!(format!("{options:?}").contains("extra_roots: 1"));
    }
}
