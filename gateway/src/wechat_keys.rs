//! Where the v3 notification's prover gets WeChat's verifying keys for each
//! v3 merchant: the WeChat Pay public key from its configuration
//! (`V3Merchant.public_key`) and, once wired in, the platform certificates a
//! key manager downloads, keeps in the database and refreshes. The prover
//! stays pure: it is handed each merchant's keys as they stand in memory
//! ([`KeySource::keys`], no I/O per message), and only a message naming a
//! serial nobody knows may ask the source to look again
//! ([`KeySource::refresh`], rate-limited by the source), after which it is
//! proven once more. Never touches a message's order or audit row.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use wxpay_core::wechat::{v3::WechatKeys, MerchantBook, MerchantEntry};

/// WeChat's keys per v3 merchant.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// Every key `merchant` accepts WeChat's signatures from now, from
    /// memory (empty for a v2 merchant).
    fn keys(&self, merchant: &MerchantEntry) -> Arc<WechatKeys>;

    /// A message named `serial`, which no merchant's keys hold: fetch what
    /// WeChat has now if the source can and may (at most once a minute),
    /// and say whether any merchant's keys changed.
    async fn refresh(&self, serial: &str) -> bool;
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

    async fn refresh(&self, _serial: &str) -> bool {
        false
    }
}
