//! A running sandbox for tests in any crate, and the typed client of its control
//! API: `spawn` starts it on 127.0.0.1:0 in a tokio task and returns a
//! [`SandboxHandle`] that knows its URLs (plain and TLS), the certificates each
//! account needs for `/secapi/`, and can pay, fail and inspect orders; for v3
//! merchants it issues their API key pairs, shows WeChat's keys to configure
//! them with, and rotates those keys.

use std::{path::Path, time::Duration};

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use wxpay_core::wechat::Merchant;

use crate::{
    config::SandboxConfig,
    control::{
        AgeOptions, ErrorBody, FailOptions, OrderView, PayOptions, RefundView, SettleOptions,
    },
    control_v3::{CertificateView, KeyModeOptions, MerchantKeyOptions, V3MerchantView},
    faults::Faults,
    keygen::{self, IssuedMerchantKey},
    orders::DeliveryAttempt,
    tls::TlsFiles,
    wechat_keys::KeyMode,
    Sandbox,
};

/// Why a control call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the sandbox could not be reached: {0}")]
    Transport(String),
    /// The sandbox refused: 404 (no such order), 409 (not allowed now), 400.
    #[error("the sandbox answered {status}: {error}")]
    Status { status: u16, error: String },
    /// Something done on this side failed (a key pair made, a file written).
    #[error("{0}")]
    Local(String),
}

impl ControlError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ControlError::Status { status, .. } => Some(*status),
            ControlError::Transport(_) | ControlError::Local(_) => None,
        }
    }
}

/// A sandbox running in the background of a test.
#[derive(Debug)]
pub struct SandboxHandle {
    base_url: String,
    port: u16,
    https_url: String,
    tls_port: u16,
    tls_files: TlsFiles,
    config: SandboxConfig,
    http: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a sandbox on 127.0.0.1 with a free port, in a tokio task; its TLS
/// listener on `config.tls.addr` (a free loopback port by default).
///
/// # Panics
/// When no local port can be bound or the certificates cannot be made: a test
/// cannot run without them, and a panic with the reason is the clearest
/// failure a test can give.
pub async fn spawn(config: SandboxConfig) -> SandboxHandle {
    let sandbox = match Sandbox::build(config.clone(), "127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => panic!("the WeChat sandbox could not start: {e}"),
    };
    let base_url = sandbox.base_url();
    let port = sandbox.port();
    let https_url = sandbox.https_url();
    let tls_port = sandbox.tls_port();
    let tls_files = sandbox.tls_files().clone();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(sandbox.run_until_stopped(async move { stopped.cancelled().await }));
    SandboxHandle {
        base_url,
        port,
        https_url,
        tls_port,
        tls_files,
        config,
        http: reqwest::Client::new(),
        stop,
        task,
    }
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`: the `WECHAT_API_BASE` for a client under test.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`: the `WECHAT_API_BASE` for a client that calls
    /// `/secapi/` (with the merchant's certificate and the sandbox's CA trusted).
    pub fn https_url(&self) -> &str {
        &self.https_url
    }

    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The CA to trust (`ca_path`, `ca_pem`) and, unless the configuration gave
    /// its own CA, the merchant's client certificate, key and p12 (`client()`).
    /// The files exist while the sandbox runs.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls_files
    }

    /// The default merchant; give it to the client under test. Further
    /// accounts are in `config().accounts`, their client certificates in
    /// `tls_files().client_for(mch_id)`.
    pub fn merchant(&self) -> &Merchant {
        &self.config.merchant
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The payer pays: the order becomes SUCCESS and its notification is sent.
    pub async fn pay(
        &self,
        out_trade_no: &str,
        options: PayOptions,
    ) -> Result<OrderView, ControlError> {
        self.post(&format!("/sandbox/orders/{out_trade_no}/pay"), &options)
            .await
    }

    /// The payment fails: PAYERROR, and a result_code FAIL notification.
    pub async fn fail(
        &self,
        out_trade_no: &str,
        options: FailOptions,
    ) -> Result<OrderView, ControlError> {
        self.post(&format!("/sandbox/orders/{out_trade_no}/fail"), &options)
            .await
    }

    /// The payer is entering their password: USERPAYING, no notification.
    pub async fn user_paying(&self, out_trade_no: &str) -> Result<OrderView, ControlError> {
        self.post(&format!("/sandbox/orders/{out_trade_no}/userpaying"), &())
            .await
    }

    /// Moves the order's times `by` into the past (whole seconds), as if it had been
    /// created, paid and set to expire that much earlier.
    pub async fn age(&self, out_trade_no: &str, by: Duration) -> Result<OrderView, ControlError> {
        let options = AgeOptions {
            seconds: by.as_secs(),
        };
        self.post(&format!("/sandbox/orders/{out_trade_no}/age"), &options)
            .await
    }

    /// The refund as WeChat holds it.
    pub async fn refund(&self, out_refund_no: &str) -> Result<RefundView, ControlError> {
        self.get(&format!("/sandbox/refunds/{out_refund_no}")).await
    }

    /// WeChat's bank side finishes the refund, and its notification is sent to the
    /// refund's notify_url (if the refund request gave one).
    pub async fn settle_refund(
        &self,
        out_refund_no: &str,
        options: SettleOptions,
    ) -> Result<RefundView, ControlError> {
        self.post(
            &format!("/sandbox/refunds/{out_refund_no}/settle"),
            &options,
        )
        .await
    }

    /// Moves the refund's times `by` into the past (not before its payment).
    pub async fn age_refund(
        &self,
        out_refund_no: &str,
        by: Duration,
    ) -> Result<RefundView, ControlError> {
        let options = AgeOptions {
            seconds: by.as_secs(),
        };
        self.post(&format!("/sandbox/refunds/{out_refund_no}/age"), &options)
            .await
    }

    /// Every refund notification attempt so far.
    pub async fn refund_notifications(
        &self,
        out_refund_no: &str,
    ) -> Result<Vec<DeliveryAttempt>, ControlError> {
        self.get(&format!("/sandbox/refunds/{out_refund_no}/notifications"))
            .await
    }

    /// Arms faults for the next WeChat API calls (replacing what was armed).
    pub async fn set_faults(&self, faults: Faults) -> Result<Faults, ControlError> {
        self.post("/sandbox/faults", &faults).await
    }

    /// The faults still armed (each counts down as calls take it).
    pub async fn faults(&self) -> Result<Faults, ControlError> {
        self.get("/sandbox/faults").await
    }

    /// The order as WeChat holds it.
    pub async fn order(&self, out_trade_no: &str) -> Result<OrderView, ControlError> {
        self.get(&format!("/sandbox/orders/{out_trade_no}")).await
    }

    /// Every notification attempt for the order so far.
    pub async fn notifications(
        &self,
        out_trade_no: &str,
    ) -> Result<Vec<DeliveryAttempt>, ControlError> {
        self.get(&format!("/sandbox/orders/{out_trade_no}/notifications"))
            .await
    }

    /// The delivery log once it holds at least `count` attempts, or what it holds
    /// when `within` has passed (for the caller to assert on).
    pub async fn wait_for_notifications(
        &self,
        out_trade_no: &str,
        count: usize,
        within: Duration,
    ) -> Result<Vec<DeliveryAttempt>, ControlError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let log = self.notifications(out_trade_no).await?;
            if log.len() >= count || tokio::time::Instant::now() >= deadline {
                return Ok(log);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What WeChat holds for the v3 merchant `mch_id`: its key mode, the
    /// WeChat Pay public key and id to write as its `wechatpay_public_key` and
    /// `wechatpay_public_key_id`, the platform certificates, its API key's serial.
    pub async fn v3_merchant(&self, mch_id: &str) -> Result<V3MerchantView, ControlError> {
        self.get(&format!("/sandbox/v3/merchants/{mch_id}")).await
    }

    /// Writes the WeChat Pay public key the v3 merchant `mch_id` is given to
    /// `path` (its `wechatpay_public_key` file) and returns the view, whose
    /// `public_key_id` is its `wechatpay_public_key_id`.
    pub async fn write_wechat_public_key(
        &self,
        mch_id: &str,
        path: &Path,
    ) -> Result<V3MerchantView, ControlError> {
        let view = self.v3_merchant(mch_id).await?;
        keygen::write_public(path, &view.public_key_pem)
            .map_err(|e| ControlError::Local(e.to_string()))?;
        Ok(view)
    }

    /// Issues the v3 merchant `mch_id` an API key pair, as WeChat's
    /// certificate tool does: a fresh RSA 2048 key written to
    /// `dir/apiclient_key.pem` (PKCS#8) and a serial, and registers the public
    /// half with the sandbox (the merchant's requests are checked with it from
    /// now on). Configure the merchant with `private_key` = the path and
    /// `serial_no` = the serial. The private key never leaves this process.
    pub async fn issue_merchant_key(
        &self,
        mch_id: &str,
        dir: &Path,
    ) -> Result<IssuedMerchantKey, ControlError> {
        let dir = dir.to_owned();
        let issued = tokio::task::spawn_blocking(move || keygen::issue_merchant_key(&dir))
            .await
            .map_err(|e| ControlError::Local(format!("key generation stopped: {e}")))?
            .map_err(|e| ControlError::Local(e.to_string()))?;
        self.register_merchant_key(mch_id, &issued.serial_no, issued.key.public_pem())
            .await?;
        Ok(issued)
    }

    /// Registers the public half of a v3 merchant's API key (SPKI PEM) and
    /// its certificate's serial: what uploading an API certificate does.
    pub async fn register_merchant_key(
        &self,
        mch_id: &str,
        serial_no: &str,
        public_key_pem: &str,
    ) -> Result<V3MerchantView, ControlError> {
        let options = MerchantKeyOptions {
            serial_no: serial_no.to_owned(),
            public_key_pem: public_key_pem.to_owned(),
        };
        self.post(
            &format!("/sandbox/v3/merchants/{mch_id}/merchant-key"),
            &options,
        )
        .await
    }

    /// Which of WeChat's keys the v3 merchant is given from now on.
    pub async fn set_key_mode(
        &self,
        mch_id: &str,
        key_mode: KeyMode,
    ) -> Result<V3MerchantView, ControlError> {
        self.post(
            &format!("/sandbox/v3/merchants/{mch_id}/key-mode"),
            &KeyModeOptions { key_mode },
        )
        .await
    }

    /// Every platform certificate valid now, oldest first.
    pub async fn platform_certificates(&self) -> Result<Vec<CertificateView>, ControlError> {
        self.get("/sandbox/v3/certificates").await
    }

    /// A new platform certificate signs from now on (for merchants in
    /// certificate mode); the old ones stay valid and listed, so a client
    /// that knew only them meets an unknown serial and must download again.
    pub async fn rotate_certificate(&self) -> Result<CertificateView, ControlError> {
        self.post("/sandbox/v3/certificates/rotate", &()).await
    }

    /// A new WeChat Pay public key, with a new id, for the merchant `mch_id`.
    pub async fn rotate_public_key(&self, mch_id: &str) -> Result<V3MerchantView, ControlError> {
        self.post(
            &format!("/sandbox/v3/merchants/{mch_id}/public-key/rotate"),
            &(),
        )
        .await
    }

    /// Stops the sandbox gracefully and waits for it.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ControlError> {
        let json = serde_json::to_vec(body).map_err(|e| ControlError::Transport(e.to_string()))?;
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(json);
        Self::send(request).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ControlError> {
        Self::send(self.http.get(format!("{}{path}", self.base_url))).await
    }

    async fn send<T: DeserializeOwned>(
        request: reqwest::RequestBuilder,
    ) -> Result<T, ControlError> {
        let response = request
            .send()
            .await
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ControlError::Transport(e.to_string()))?;
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ControlError::Status {
                status: status.as_u16(),
                error,
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::Transport(format!("unexpected reply: {e}")))
    }
}
