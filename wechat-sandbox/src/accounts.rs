//! The merchant accounts the sandbox hosts, and who a request speaks for.
//! [`Account`] is how a configuration lists them (the default merchant plus
//! further ones, e.g. from `MERCHANTS_FILE`); [`Registry`] merges them by
//! mch_id once at start (one key per mch_id, its appids, the sub merchants
//! bound to it as their service provider) and answers the lookups every
//! request makes. [`Owner`] is the (mch_id, sub_mch_id) an order belongs to.
//! An account may also speak v3 ([`V3Account`]): then WeChat knows its API
//! public key, its APIv3 key and which of WeChat's keys it is given; the
//! keys that change while the sandbox runs live in `wechat_keys::KeyRing`.
//! Pure: what a request may do with an account is `protocol`'s (v2) and
//! `v3_protocol`'s rule.

use std::collections::{BTreeMap, BTreeSet};

use wxpay_core::wechat::{
    v3::{Apiv3Key, WechatKey},
    ApiKey, Merchant, MerchantEntry,
};

use crate::wechat_keys::KeyMode;

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
    /// The account speaks v3 too (a v3 merchant, or one moving from v2 to v3:
    /// its v2 orders stay queryable over v3 and keep their v2 notifications).
    pub v3: Option<V3Account>,
}

/// What WeChat knows of a v3 merchant.
#[derive(Debug, Clone)]
pub struct V3Account {
    /// Opens nothing at the sandbox: it seals notifications and the
    /// certificates of `/v3/certificates` for this merchant.
    pub apiv3_key: Apiv3Key,
    /// The public half of the merchant's API key, named by its API
    /// certificate's serial, which every request's signature is checked with.
    /// `None`: to be issued later (`SandboxHandle::issue_merchant_key`).
    pub merchant_key: Option<WechatKey>,
    pub key_mode: KeyMode,
    /// The `PUB_KEY_ID_…` the merchant is given (its `wechatpay_public_key_id`);
    /// `None`: the sandbox makes one from the mch_id.
    pub public_key_id: Option<String>,
}

impl V3Account {
    pub fn new(apiv3_key: Apiv3Key, key_mode: KeyMode) -> Self {
        Self {
            apiv3_key,
            merchant_key: None,
            key_mode,
            public_key_id: None,
        }
    }

    pub fn with_merchant_key(mut self, key: WechatKey) -> Self {
        self.merchant_key = Some(key);
        self
    }

    /// What a merchants-file entry's v3 fields say: its API key's public half,
    /// its APIv3 key, and public-key mode (with the entry's id) when it names
    /// a WeChat Pay public key, else platform certificates.
    pub fn from_entry(v3: &wxpay_core::wechat::V3Merchant) -> Self {
        Self {
            apiv3_key: v3.apiv3_key.clone(),
            merchant_key: Some(v3.signer.public_key()),
            key_mode: if v3.public_key.is_some() {
                KeyMode::PublicKey
            } else {
                KeyMode::Certificates
            },
            public_key_id: v3.public_key.as_ref().map(|k| k.id().to_owned()),
        }
    }
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
            v3: None,
        }
    }

    /// A service provider for `sub_merchants`, which does not trade for itself.
    pub fn provider(merchant: Merchant, sub_merchants: Vec<SubMerchant>) -> Self {
        Self {
            merchant,
            sub_merchants,
            direct: false,
            v3: None,
        }
    }

    /// The same account speaking v3 as well.
    pub fn with_v3(mut self, v3: V3Account) -> Self {
        self.v3 = Some(v3);
        self
    }

    /// The account a merchants-file entry signs with: a direct merchant, or
    /// the provider with the entry's sub merchant bound to it. Entries sharing
    /// a mch_id become one account (see [`Registry`]).
    pub fn from_entry(entry: &MerchantEntry) -> Self {
        let account = match &entry.sub_mch_id {
            None => Self::direct(entry.merchant.clone()),
            Some(sub_mch_id) => Self::provider(
                entry.merchant.clone(),
                vec![SubMerchant {
                    sub_mch_id: sub_mch_id.clone(),
                    sub_app_id: entry.sub_app_id.clone(),
                }],
            ),
        };
        Self {
            v3: entry.v3.as_ref().map(V3Account::from_entry),
            ..account
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
    /// Its v3 side, when any listing has one (see [`Registry::new`]).
    pub v3: Option<V3Account>,
}

/// Every hosted mch_id.
#[derive(Debug, Clone)]
pub struct Registry {
    by_mch_id: BTreeMap<String, Hosted>,
}

impl Registry {
    /// Merges `default` and `accounts` by mch_id. Two v2 listings of one
    /// mch_id must carry the same key: WeChat has one API key per merchant,
    /// and a second one would leave it unclear which signature is right. A v3
    /// listing may carry no APIv2 key at all (the merchants file then gives
    /// it a random one nobody holds), so its key is compared with nothing and
    /// used only when no v2 listing gives one; its v3 side must agree with
    /// any other v3 listing's (one APIv3 key, one API key serial).
    pub fn new(default: &Merchant, accounts: &[Account]) -> Result<Self, String> {
        let mut by_mch_id: BTreeMap<String, Hosted> = BTreeMap::new();
        // Whether a hosted account's API key came from a v2 listing.
        let mut v2_keyed: BTreeSet<String> = BTreeSet::new();
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
                v3: None,
            });
            match &account.v3 {
                None if v2_keyed.contains(&m.mch_id) => {
                    if hosted.api_key.expose_secret() != m.api_key.expose_secret() {
                        return Err(format!(
                            "mch_id {} is listed twice with different API keys",
                            m.mch_id
                        ));
                    }
                }
                None => {
                    hosted.api_key = m.api_key.clone();
                    v2_keyed.insert(m.mch_id.clone());
                }
                Some(v3) => merge_v3(hosted, v3)?,
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

    /// Every hosted account, by mch_id.
    pub fn all(&self) -> impl Iterator<Item = &Hosted> {
        self.by_mch_id.values()
    }

    /// Whether any account speaks v3 (the sandbox then makes WeChat's v3 keys).
    pub fn has_v3(&self) -> bool {
        self.all().any(|h| h.v3.is_some())
    }

    /// Every hosted mch_id, in order.
    pub fn mch_ids(&self) -> impl Iterator<Item = &str> {
        self.by_mch_id.keys().map(String::as_str)
    }

    pub fn key_of(&self, mch_id: &str) -> Option<&ApiKey> {
        self.get(mch_id).map(|h| &h.api_key)
    }
}

/// Adds a v3 listing to `hosted`: the first one's fields, and every later
/// one must name the same APIv3 key and (when both name one) the same API key
/// and WeChat Pay public key id.
fn merge_v3(hosted: &mut Hosted, v3: &V3Account) -> Result<(), String> {
    let Some(have) = &mut hosted.v3 else {
        hosted.v3 = Some(v3.clone());
        return Ok(());
    };
    let differs = |field: &str| {
        Err(format!(
            "mch_id {} is listed twice with different {field}",
            hosted.mch_id
        ))
    };
    if have.apiv3_key.expose_secret() != v3.apiv3_key.expose_secret() {
        return differs("APIv3 keys");
    }
    match (&have.merchant_key, &v3.merchant_key) {
        (Some(a), Some(b)) if a != b => return differs("API keys (private_key / serial_no)"),
        (None, Some(b)) => have.merchant_key = Some(b.clone()),
        _ => {}
    }
    match (&have.public_key_id, &v3.public_key_id) {
        (Some(a), Some(b)) if a != b => return differs("wechatpay_public_key_id"),
        (None, Some(b)) => have.public_key_id = Some(b.clone()),
        _ => {}
    }
    if have.key_mode != v3.key_mode {
        return differs("key modes (a WeChat Pay public key in one listing only)");
    }
    Ok(())
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

    fn v3(apiv3: &str, mode: KeyMode) -> V3Account {
        V3Account::new(Apiv3Key::parse(apiv3).expect("32 bytes"), mode)
    }

    #[test]
    fn a_v3_listing_needs_no_v2_key_but_must_agree_with_other_v3_listings() {
        let default = merchant("100", "wxa", K1);
        // The merchants file gives a v3 merchant without api_key a random one.
        let v3_only = Account::direct(Merchant {
            api_key: ApiKey::unguessable(),
            ..merchant("300", "wxc", K1)
        })
        .with_v3(v3(K2, KeyMode::PublicKey));
        let v3_again = Account::provider(
            Merchant {
                api_key: ApiKey::unguessable(),
                ..merchant("300", "wxc", K1)
            },
            vec![SubMerchant {
                sub_mch_id: "301".into(),
                sub_app_id: None,
            }],
        )
        .with_v3(v3(K2, KeyMode::PublicKey));
        // A merchant moving from v2 keeps its v2 key for its v2 orders.
        let moving_v2 = Account::direct(merchant("100", "wxa", K1));
        let moving_v3 = Account::direct(Merchant {
            api_key: ApiKey::unguessable(),
            ..merchant("100", "wxa", K1)
        })
        .with_v3(v3(K2, KeyMode::Certificates));
        let registry = Registry::new(&default, &[v3_only, v3_again, moving_v3, moving_v2])
            .expect("consistent");
        assert!(registry.has_v3());
        let moving = registry.get("100").expect("hosted");
        assert_eq!(moving.api_key.expose_secret(), K1);
        assert_eq!(
            moving.v3.as_ref().map(|v| v.key_mode),
            Some(KeyMode::Certificates)
        );
        let shop = registry.get("300").expect("hosted");
        assert!(shop.direct && shop.sub_merchants.contains_key("301"));

        let other_apiv3 = Account::direct(merchant("300", "wxc", K1))
            .with_v3(v3("33333333333333333333333333333333", KeyMode::PublicKey));
        let err = Registry::new(
            &default,
            &[
                Account::direct(merchant("300", "wxc", K1)).with_v3(v3(K2, KeyMode::PublicKey)),
                other_apiv3,
            ],
        )
        .expect_err("two APIv3 keys");
        assert!(err.contains("300") && err.contains("APIv3"), "{err}");
        assert!(!err.contains(K2), "{err}");
        assert!(!Registry::new(&default, &[]).expect("v2 only").has_v3());
    }
}
