//! The control API's v3 part (JSON, under `/sandbox/v3/`): what a harness
//! needs to wire a v3 merchant to the sandbox and what tests do to WeChat's
//! keys. Look at a merchant's keys (its WeChat Pay public key and id, the
//! platform certificates, its API key's serial), register the public half of
//! a merchant's API key (what uploading an API certificate does), switch its
//! key mode, and rotate WeChat's keys: a new platform certificate that signs
//! from now on while the old ones stay listed, or a new public key.

use axum::{
    body::Bytes,
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use wxpay_core::wechat::v3::WechatKey;

use crate::{
    control::{required, ControlError},
    keygen::KeyPair,
    state::AppState,
    wechat_keys::{KeyMode, KeyRing, KeyRingError, PlatformCertificate},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandbox/v3/merchants/{mch_id}", get(merchant))
        .route(
            "/sandbox/v3/merchants/{mch_id}/merchant-key",
            post(register_merchant_key),
        )
        .route("/sandbox/v3/merchants/{mch_id}/key-mode", post(key_mode))
        .route(
            "/sandbox/v3/merchants/{mch_id}/public-key/rotate",
            post(rotate_public_key),
        )
        .route("/sandbox/v3/certificates", get(certificates))
        .route("/sandbox/v3/certificates/rotate", post(rotate_certificate))
}

/// One platform certificate as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    pub serial_no: String,
    /// The certificate, PEM (public).
    pub pem: String,
    /// RFC 3339, +08:00.
    pub effective_time: String,
    pub expire_time: String,
    /// Whether it is the one that signs now.
    pub current: bool,
}

impl CertificateView {
    fn of(cert: &PlatformCertificate, current: bool) -> Self {
        let (effective_time, expire_time) = cert.validity_rfc3339();
        Self {
            serial_no: cert.serial_no().to_owned(),
            pem: cert.pem().to_owned(),
            effective_time,
            expire_time,
            current,
        }
    }
}

/// What WeChat holds for a v3 merchant, as the control API shows it: what a
/// harness writes into the merchant's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V3MerchantView {
    pub mch_id: String,
    pub key_mode: KeyMode,
    /// `wechatpay_public_key_id`: the `PUB_KEY_ID_…` WeChat signs with in
    /// public-key mode.
    pub public_key_id: String,
    /// The file to write as `wechatpay_public_key` (SPKI PEM).
    pub public_key_pem: String,
    /// The serial of the merchant's API key WeChat checks requests with
    /// (`serial_no`), once one is issued or registered.
    pub merchant_serial_no: Option<String>,
    /// Every platform certificate valid now, oldest first (what
    /// `/v3/certificates` lists, unless the merchant is in public-key mode).
    pub certificates: Vec<CertificateView>,
}

/// `POST /sandbox/v3/merchants/{mch_id}/merchant-key`: the public half of the
/// merchant's API key and its certificate's serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantKeyOptions {
    /// Hex, as `serial_no` in the merchant's requests.
    pub serial_no: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

/// `POST /sandbox/v3/merchants/{mch_id}/key-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyModeOptions {
    pub key_mode: KeyMode,
}

impl From<KeyRingError> for ControlError {
    fn from(e: KeyRingError) -> Self {
        match e {
            KeyRingError::NotV3(mch_id) => ControlError::NotV3(mch_id),
            KeyRingError::Key(e) => ControlError::Internal(e.to_string()),
        }
    }
}

/// The view of `mch_id` in `keys`.
pub(crate) fn view(keys: &KeyRing, mch_id: &str) -> Result<V3MerchantView, ControlError> {
    let merchant = keys
        .merchant(mch_id)
        .ok_or_else(|| ControlError::NotV3(mch_id.to_owned()))?;
    let (public_key_id, public_key_pem) = keys
        .public_key_of(mch_id)
        .ok_or_else(|| ControlError::NotV3(mch_id.to_owned()))?;
    Ok(V3MerchantView {
        mch_id: mch_id.to_owned(),
        key_mode: merchant.mode,
        public_key_id: public_key_id.to_owned(),
        public_key_pem: public_key_pem.to_owned(),
        merchant_serial_no: merchant.merchant_key.as_ref().map(|k| k.id().to_owned()),
        certificates: certificate_views(keys),
    })
}

fn certificate_views(keys: &KeyRing) -> Vec<CertificateView> {
    let current = keys.current_certificate().map(|c| c.serial_no().to_owned());
    keys.certificates(Utc::now())
        .into_iter()
        .map(|c| CertificateView::of(c, Some(c.serial_no()) == current.as_deref()))
        .collect()
}

fn no_v3(mch_id: &str) -> ControlError {
    ControlError::NotV3(mch_id.to_owned())
}

async fn merchant(
    State(state): State<AppState>,
    Path(mch_id): Path<String>,
) -> Result<Json<V3MerchantView>, ControlError> {
    let keys = state.keys().ok_or_else(|| no_v3(&mch_id))?;
    Ok(Json(view(&keys, &mch_id)?))
}

async fn register_merchant_key(
    State(state): State<AppState>,
    Path(mch_id): Path<String>,
    body: Bytes,
) -> Result<Json<V3MerchantView>, ControlError> {
    let options: MerchantKeyOptions = required(&body)?;
    let serial_ok = (1..=64).contains(&options.serial_no.len())
        && options.serial_no.bytes().all(|b| b.is_ascii_hexdigit());
    if !serial_ok {
        return Err(ControlError::BadRequest(
            "serial_no must be 1..=64 hex digits".to_owned(),
        ));
    }
    let key = WechatKey::from_public_key_pem(&options.serial_no, options.public_key_pem.as_bytes())
        .map_err(|e| ControlError::BadRequest(format!("public_key_pem {e}")))?;
    let mut keys = state.keys().ok_or_else(|| no_v3(&mch_id))?;
    keys.register_merchant_key(&mch_id, key)?;
    tracing::info!(%mch_id, serial_no = %options.serial_no, "v3 merchant API key registered");
    Ok(Json(view(&keys, &mch_id)?))
}

async fn key_mode(
    State(state): State<AppState>,
    Path(mch_id): Path<String>,
    body: Bytes,
) -> Result<Json<V3MerchantView>, ControlError> {
    let KeyModeOptions { key_mode } = required(&body)?;
    let mut keys = state.keys().ok_or_else(|| no_v3(&mch_id))?;
    keys.set_mode(&mch_id, key_mode)?;
    tracing::info!(%mch_id, ?key_mode, "v3 key mode set");
    Ok(Json(view(&keys, &mch_id)?))
}

/// A fresh key pair, made off the runtime's threads (it takes a while).
async fn fresh_key() -> Result<KeyPair, ControlError> {
    tokio::task::spawn_blocking(KeyPair::generate)
        .await
        .map_err(|e| ControlError::Internal(format!("key generation stopped: {e}")))?
        .map_err(|e| ControlError::Internal(e.to_string()))
}

async fn rotate_public_key(
    State(state): State<AppState>,
    Path(mch_id): Path<String>,
) -> Result<Json<V3MerchantView>, ControlError> {
    // Refused before the slow part for a merchant that is not v3.
    if state
        .keys()
        .and_then(|k| k.merchant(&mch_id).cloned())
        .is_none()
    {
        return Err(no_v3(&mch_id));
    }
    let pair = fresh_key().await?;
    let mut keys = state.keys().ok_or_else(|| no_v3(&mch_id))?;
    keys.rotate_public_key(&mch_id, pair, Utc::now())?;
    let view = view(&keys, &mch_id)?;
    tracing::info!(%mch_id, public_key_id = %view.public_key_id, "WeChat Pay public key rotated");
    Ok(Json(view))
}

async fn certificates(
    State(state): State<AppState>,
) -> Result<Json<Vec<CertificateView>>, ControlError> {
    let keys = state
        .keys()
        .ok_or_else(|| ControlError::NotV3("(none)".to_owned()))?;
    Ok(Json(certificate_views(&keys)))
}

/// `POST /sandbox/v3/certificates/rotate`: a new platform certificate signs
/// from now on; the older ones stay valid and listed.
async fn rotate_certificate(
    State(state): State<AppState>,
) -> Result<Json<CertificateView>, ControlError> {
    if state.keys().is_none() {
        return Err(ControlError::NotV3("(none)".to_owned()));
    }
    let pair = fresh_key().await?;
    let cert = PlatformCertificate::issue(&pair, Utc::now())
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let view = CertificateView::of(&cert, true);
    if let Some(mut keys) = state.keys() {
        keys.add_certificate(cert);
    }
    tracing::info!(serial_no = %view.serial_no, "platform certificate rotated");
    Ok(Json(view))
}
