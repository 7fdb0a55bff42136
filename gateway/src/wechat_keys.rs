//! Where the v3 notification's prover gets WeChat's verifying keys for each
//! v3 merchant: the WeChat Pay public key from its configuration
//! (`V3Merchant.public_key`) and the platform certificates that
//! [`PlatformKeys`] (wxpay-wechat-v3, shared with payment-service) downloads,
//! keeps in the database for every replica and refreshes. The prover stays
//! pure: it is handed each merchant's keys as they stand in memory
//! ([`KeySource::keys`], no I/O per message), and only a message naming a
//! serial nobody holds may ask the source to look again
//! ([`KeySource::refresh`]: the database, then WeChat, at most once a minute
//! per merchant), after which it is proven once more ([`prove`], what both v3
//! endpoints call). Never touches a message's order or audit row.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use axum::{body::Bytes, http::HeaderMap};
use chrono::Utc;
use wxpay_core::wechat::{
    v3::{SignedHeaders, VerifyError, WechatKeys},
    MerchantBook, MerchantEntry,
};
use wxpay_wechat_v3::PlatformKeys;

use crate::proof::{self, Proven, Refused, V3Endpoint, V3Event};

/// How long a message naming an unknown serial waits for the key source to
/// look again before it is refused (WeChat then retries).
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Proves a v3 message that came in on `endpoint` ([`proof::v3`]) with every
/// v3 merchant's keys as they are now; when it names a serial no merchant
/// holds (a rotated platform certificate), asks `source` to look once (the
/// source limits how often) and proves it again with what it found.
pub async fn prove(
    merchants: &MerchantBook,
    source: &dyn KeySource,
    endpoint: V3Endpoint,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Proven<V3Event>, Refused> {
    let signed = SignedHeaders::from_fn(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let prove_now = || {
        let merchants: Vec<_> = merchants
            .entries()
            .iter()
            .filter(|e| e.v3.is_some())
            .map(|e| (e, source.keys(e)))
            .collect();
        proof::v3(endpoint, &merchants, &signed, body, Utc::now())
    };
    let proven = prove_now();
    if !matches!(&proven, Err(refused) if refused.reason == proof::UNKNOWN_SERIAL) {
        return proven;
    }
    match tokio::time::timeout(REFRESH_WAIT, source.refresh(&signed, body)).await {
        Ok(true) => prove_now(),
        Ok(false) | Err(_) => proven,
    }
}

/// WeChat's keys per v3 merchant.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// Every key `merchant` accepts WeChat's signatures from now, from
    /// memory (empty for a v2 merchant).
    fn keys(&self, merchant: &MerchantEntry) -> Arc<WechatKeys>;

    /// A message (its headers and raw body) names a serial no merchant's
    /// keys hold: look again if the source can and may (at most once a
    /// minute), and say whether some merchant holds that serial now.
    async fn refresh(&self, headers: &SignedHeaders<'_>, body: &[u8]) -> bool;
}

/// The keys the configuration holds: each v3 merchant's WeChat Pay public
/// key, when it is in public-key mode. Fixed for the process's life, so
/// there is nothing to refresh.
#[derive(Debug, Default)]
pub struct ConfiguredKeys {
    by_name: HashMap<String, Arc<WechatKeys>>,
}

impl ConfiguredKeys {
    pub fn new(merchants: &MerchantBook) -> Self {
        let by_name = merchants
            .entries()
            .iter()
            .filter_map(|e| {
                let public = e.v3.as_ref()?.public_key.clone();
                Some((
                    e.name.clone(),
                    Arc::new(WechatKeys::new(public.into_iter().collect())),
                ))
            })
            .collect();
        Self { by_name }
    }
}

#[async_trait]
impl KeySource for ConfiguredKeys {
    fn keys(&self, merchant: &MerchantEntry) -> Arc<WechatKeys> {
        self.by_name
            .get(&merchant.name)
            .cloned()
            .unwrap_or_default()
    }

    async fn refresh(&self, _headers: &SignedHeaders<'_>, _body: &[u8]) -> bool {
        false
    }
}

/// The platform-certificate manager: each merchant's keys are its account's
/// (by mch_id; a provider's sub-merchants share them), public key included.
#[async_trait]
impl KeySource for PlatformKeys {
    fn keys(&self, merchant: &MerchantEntry) -> Arc<WechatKeys> {
        PlatformKeys::keys(self, &merchant.merchant.mch_id).unwrap_or_default()
    }

    async fn refresh(&self, headers: &SignedHeaders<'_>, body: &[u8]) -> bool {
        // verify_any refreshes every merchant that does not hold the serial
        // (the database first, then WeChat; each at most once a minute, one
        // refresh however many messages ask; never for a PUB_KEY_ID_, which
        // is configured, not downloaded) and verifies once more. Only
        // whether the serial is now held matters here: the prover then
        // checks the signature itself, and opens the resource.
        !matches!(
            self.verify_any(headers, body).await,
            Err(VerifyError::UnknownSerial(_))
        )
    }
}
