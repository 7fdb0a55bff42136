//! The merchant accounts the sandbox hosts, and who a request speaks for.
//! [`Account`] is how a configuration lists them (the default merchant plus
//! further ones, e.g. from `MERCHANTS_FILE`); [`Registry`] merges them by
//! mch_id once at start (one key per mch_id, its appids, the sub merchants
//! bound to it as their service provider) and answers the lookups every
//! request makes. [`Owner`] is the (mch_id, sub_mch_id) an order belongs to.
//! Pure: what a request may do with an account is `protocol`'s rule.

use std::collections::{BTreeMap, BTreeSet};

use wxpay_core::wechat::{ApiKey, Merchant, MerchantEntry};

/// A merchant account the sandbox hosts besides `SandboxConfig::merchant`.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its appid, mch_id and API key: a request naming this mch_id is verified
    /// with this key, and its replies and notifications are signed with it.
    pub merchant: Merchant,
    /// Sub merchants (特约商户) this account is the service provider of:
    /// requests may name them in `sub_mch_id` (and `sub_appid`).
    pub sub_merchants: Vec<SubMerchant>,
    /// Whether the account also trades for itself. A pure service provider
    /// refuses requests without `sub_mch_id`, as WeChat does.
    pub direct: bool,
}

/// A sub merchant bound to a service provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMerchant {
    pub sub_mch_id: String,
    /// The sub merchant's appid (its mini program), when it has one.
    pub sub_app_id: Option<String>,
}

impl Account {
    /// A merchant that trades for itself.
    pub fn direct(merchant: Merchant) -> Self {
        Self {
            merchant,
            sub_merchants: Vec::new(),
            direct: true,
        }
    }

    /// A service provider for `sub_merchants`, which does not trade for itself.
    pub fn provider(merchant: Merchant, sub_merchants: Vec<SubMerchant>) -> Self {
        Self {
            merchant,
            sub_merchants,
            direct: false,
        }
    }

    /// The account a merchants-file entry signs with: a direct merchant, or
    /// the provider with the entry's sub merchant bound to it. Entries sharing
    /// a mch_id become one account (see [`Registry`]).
    pub fn from_entry(entry: &MerchantEntry) -> Self {
        match &entry.sub_mch_id {
            None => Self::direct(entry.merchant.clone()),
            Some(sub_mch_id) => Self::provider(
                entry.merchant.clone(),
                vec![SubMerchant {
                    sub_mch_id: sub_mch_id.clone(),
                    sub_app_id: entry.sub_app_id.clone(),
                }],
            ),
        }
    }
}

/// Whose an order (or a bill) is: the account, and the sub merchant in
/// service-provider mode. Requests of another owner do not find the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub mch_id: String,
    pub sub_mch_id: Option<String>,
}

/// One mch_id as the sandbox hosts it: every account listed under it merged.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub mch_id: String,
    pub api_key: ApiKey,
    /// The first appid listed (what a reply names when the request's is not one of them).
    pub primary_app_id: String,
    pub app_ids: BTreeSet<String>,
    pub direct: bool,
    /// sub_mch_id → the sub_appids bound to it.
    pub sub_merchants: BTreeMap<String, BTreeSet<String>>,
}

/// Every hosted mch_id.
#[derive(Debug, Clone)]
pub struct Registry {
    by_mch_id: BTreeMap<String, Hosted>,
}

impl Registry {
    /// Merges `default` and `accounts` by mch_id. Two listings of one mch_id
    /// must carry the same key: WeChat has one API key per merchant, and a
    /// second one would leave it unclear which signature is right.
    pub fn new(default: &Merchant, accounts: &[Account]) -> Result<Self, String> {
        let mut by_mch_id: BTreeMap<String, Hosted> = BTreeMap::new();
        let default = Account::direct(default.clone());
        for account in std::iter::once(&default).chain(accounts) {
            let m = &account.merchant;
            let hosted = by_mch_id.entry(m.mch_id.clone()).or_insert_with(|| Hosted {
                mch_id: m.mch_id.clone(),
                api_key: m.api_key.clone(),
                primary_app_id: m.app_id.clone(),
                app_ids: BTreeSet::new(),
                direct: false,
                sub_merchants: BTreeMap::new(),
            });
            if hosted.api_key.expose_secret() != m.api_key.expose_secret() {
                return Err(format!(
                    "mch_id {} is listed twice with different API keys",
                    m.mch_id
                ));
            }
            hosted.app_ids.insert(m.app_id.clone());
            hosted.direct |= account.direct;
            for sub in &account.sub_merchants {
                let app_ids = hosted
                    .sub_merchants
                    .entry(sub.sub_mch_id.clone())
                    .or_default();
                app_ids.extend(sub.sub_app_id.clone());
            }
        }
        Ok(Self { by_mch_id })
    }

    pub fn get(&self, mch_id: &str) -> Option<&Hosted> {
        self.by_mch_id.get(mch_id)
    }

    /// Every hosted mch_id, in order.
    pub fn mch_ids(&self) -> impl Iterator<Item = &str> {
        self.by_mch_id.keys().map(String::as_str)
    }

    pub fn key_of(&self, mch_id: &str) -> Option<&ApiKey> {
        self.get(mch_id).map(|h| &h.api_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(mch_id: &str, app_id: &str, key: &str) -> Merchant {
        Merchant {
            app_id: app_id.into(),
            mch_id: mch_id.into(),
            api_key: ApiKey::parse(key).expect("valid key"),
        }
    }

    const K1: &str = "11111111111111111111111111111111";
    const K2: &str = "22222222222222222222222222222222";

    #[test]
    fn listings_of_one_mch_id_merge_their_appids_and_sub_merchants() {
        let default = merchant("100", "wxa", K1);
        let accounts = [
            Account::direct(merchant("100", "wxb", K1)),
            Account::provider(
                merchant("200", "wxp", K2),
                vec![SubMerchant {
                    sub_mch_id: "201".into(),
                    sub_app_id: Some("wxs1".into()),
                }],
            ),
            Account::provider(
                merchant("200", "wxp", K2),
                vec![SubMerchant {
                    sub_mch_id: "201".into(),
                    sub_app_id: Some("wxs2".into()),
                }],
            ),
        ];
        let registry = Registry::new(&default, &accounts).expect("consistent");
        let direct = registry.get("100").expect("hosted");
        assert!(direct.direct);
        assert_eq!(direct.primary_app_id, "wxa");
        assert_eq!(direct.app_ids.len(), 2);
        let provider = registry.get("200").expect("hosted");
        assert!(!provider.direct);
        assert_eq!(provider.sub_merchants["201"].len(), 2);
        assert_eq!(registry.mch_ids().collect::<Vec<_>>(), ["100", "200"]);
        assert!(registry.get("300").is_none());
    }

    #[test]
    fn one_mch_id_with_two_keys_is_refused() {
        let default = merchant("100", "wxa", K1);
        let err = Registry::new(&default, &[Account::direct(merchant("100", "wxa", K2))])
            .expect_err("two keys");
        assert!(err.contains("100"), "{err}");
        assert!(!err.contains(K1) && !err.contains(K2), "{err}");
    }
}
