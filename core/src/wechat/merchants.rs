//! The merchants file (`MERCHANTS_FILE`, TOML): one `[[merchant]]` table per
//! merchant account the deployment acts for, parsed and validated once into
//! [`MerchantEntry`] values. Pure: the caller reads the file and passes the
//! environment lookup (for `api_key_env`), so every refusal is testable here.
//! What it must not do is echo a value: an error names the merchant and the
//! field, never what the field held, because that may be an API key.
//!
//! ```toml
//! [[merchant]]
//! name = "shop"
//! app_id = "wx0123456789abcdef"
//! mch_id = "1900000109"
//! api_key_env = "SHOP_API_KEY"      # or api_key = "…32 letters and digits…"
//! sign_type = "HMAC-SHA256"         # MD5 (default) | HMAC-SHA256
//! client_cert = "/etc/wxpay/shop/apiclient_cert.pem"
//! client_key = "/etc/wxpay/shop/apiclient_key.pem"
//!
//! [[merchant]]                      # service-provider mode
//! name = "platform-tenant"
//! app_id = "wxfedcba9876543210"     # the provider's
//! mch_id = "1900000200"             # the provider's
//! api_key_env = "PROVIDER_API_KEY"  # the provider's
//! sub_mch_id = "1900000201"         # the sub merchant the order is placed for
//! sub_app_id = "wx1111111111111111" # optional: the sub merchant's mini program
//! client_p12 = "/etc/wxpay/provider/apiclient_cert.p12"
//!
//! [[merchant]]                      # WeChat Pay API v3
//! name = "new-shop"
//! api_version = "v3"
//! app_id = "wx2222222222222222"
//! mch_id = "1900000300"
//! apiv3_key_env = "NEW_SHOP_APIV3_KEY"            # or apiv3_key = "…32 bytes…"
//! private_key = "/etc/wxpay/new-shop/apiclient_key.pem"
//! serial_no = "3775B6A45ACD588826D15E583A95F5DD00000000"
//! wechatpay_public_key = "/etc/wxpay/new-shop/pub_key.pem"   # omit both for platform
//! wechatpay_public_key_id = "PUB_KEY_ID_0119000003002025000000000000" # certificates
//! ```
//!
//! A v3 merchant's key files are read through the `read` function the caller
//! passes (the binaries read the file system), so this stays pure; a file
//! that cannot be read or is not the key it should be is refused naming the
//! merchant and the field, never the content.

use std::{collections::HashSet, fmt};

use super::{
    v3::{Apiv3Key, MerchantSigner, WechatKey},
    ApiKey, Merchant, SignType,
};
use crate::domain::MerchantName;

/// One `[[merchant]]` table.
#[derive(Clone)]
pub struct MerchantEntry {
    /// 1..=32 of `[A-Za-z0-9_-]`, unique in the file: how requests name it.
    pub name: String,
    /// The account that signs: app_id, mch_id and API key (the provider's in
    /// service-provider mode).
    pub merchant: Merchant,
    /// `sign_type`: MD5 unless the table says HMAC-SHA256.
    pub sign_type: SignType,
    /// Service-provider mode: the sub merchant (特约商户) orders are placed for.
    pub sub_mch_id: Option<String>,
    /// The sub merchant's appid (only with `sub_mch_id`): the payer's
    /// `sub_openid` is under it, and its mini program calls `wx.requestPayment`.
    pub sub_app_id: Option<String>,
    /// PEM certificate for `/secapi/`, as written in the file (with `client_key`).
    pub client_cert: Option<String>,
    /// PEM private key, as written (with `client_cert`).
    pub client_key: Option<String>,
    /// PKCS#12 (`apiclient_cert.p12`), as written (instead of cert + key).
    pub client_p12: Option<String>,
    /// The p12's password (only with `client_p12`; WeChat's default is the mch_id).
    pub client_p12_password: Option<String>,
    /// `api_version = "v3"`: the merchant's v3 keys, loaded. `None`: a v2
    /// merchant. An order keeps the dialect of the merchant that placed it.
    pub v3: Option<V3Merchant>,
}

/// A v3 merchant's keys: its API private key and certificate serial (which
/// sign requests and `paySign`), its APIv3 key (which opens notifications and
/// certificates), and WeChat's public key when it is in public-key mode.
/// Without a public key WeChat is verified by platform certificates, kept by
/// the services; with one, certificates are still accepted by serial when a
/// message names one (a merchant switching modes holds both).
#[derive(Clone, Debug)]
pub struct V3Merchant {
    pub apiv3_key: Apiv3Key,
    pub signer: MerchantSigner,
    pub public_key: Option<WechatKey>,
    /// The files as written (a harness passes them on to split processes).
    pub private_key_path: String,
    pub public_key_path: Option<String>,
}

/// Which protocol a merchant speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    V2,
    V3,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2 => "v2",
            ApiVersion::V3 => "v3",
        }
    }
}

impl fmt::Debug for MerchantEntry {
    /// The key is redacted by `ApiKey` itself; the p12 password is a secret too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantEntry")
            .field("name", &self.name)
            .field("merchant", &self.merchant)
            .field("sign_type", &self.sign_type)
            .field("sub_mch_id", &self.sub_mch_id)
            .field("sub_app_id", &self.sub_app_id)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("client_p12", &self.client_p12)
            .field(
                "client_p12_password",
                &self.client_p12_password.as_ref().map(|_| "**redacted**"),
            )
            .field("v3", &self.v3)
            .finish()
    }
}

/// Why the merchants file was refused. `Display` names the merchant (by name,
/// or by position when it has no usable name) and the field; never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantsFileError {
    /// The merchant's name, or `#N` (1-based) when its table has no usable name;
    /// `None` for a problem of the file as a whole.
    pub merchant: Option<String>,
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for MerchantsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.merchant, &self.field) {
            (Some(m), Some(field)) => write!(f, "merchant {m}: {field} {}", self.reason),
            (Some(m), None) => write!(f, "merchant {m}: {}", self.reason),
            (None, Some(field)) => write!(f, "{field} {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for MerchantsFileError {}

impl MerchantsFileError {
    fn file(reason: impl Into<String>) -> Self {
        Self {
            merchant: None,
            field: None,
            reason: reason.into(),
        }
    }
}

/// Every key a `[[merchant]]` table may have; any other is refused (as serde's
/// `deny_unknown_fields` would), so a misspelt `sub_mchid` cannot silently
/// turn a service-provider merchant into a direct one.
const FIELDS: [&str; 19] = [
    "name",
    "api_version",
    "apiv3_key",
    "apiv3_key_env",
    "private_key",
    "serial_no",
    "wechatpay_public_key",
    "wechatpay_public_key_id",
    "app_id",
    "mch_id",
    "api_key",
    "api_key_env",
    "sign_type",
    "sub_mch_id",
    "sub_app_id",
    "client_cert",
    "client_key",
    "client_p12",
    "client_p12_password",
];

/// Parses and validates the merchants file. `env` looks up the variable an
/// `api_key_env` names (`|name| std::env::var(name).ok()` in a binary). A
/// file with a v3 merchant needs [`parse_merchants_with_files`].
///
/// The tables are read field by field rather than through a derived
/// `Deserialize`, because serde's type errors quote the value they refused
/// (an `api_key = 1234…` would end up in the start-up line).
pub fn parse_merchants(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<MerchantEntry>, MerchantsFileError> {
    parse_merchants_with_files(text, env, |_| {
        Err(
            "cannot be read here: v3 key files need a reader (parse_merchants_with_files)"
                .to_owned(),
        )
    })
}

/// [`parse_merchants`], reading a v3 merchant's key files through `read`
/// (`|path| std::fs::read(path).map_err(|e| e.to_string())` in a binary).
pub fn parse_merchants_with_files(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<MerchantEntry>, MerchantsFileError> {
    let root: toml::Table = toml::from_str(text).map_err(|e| {
        // The parser's message describes the syntax, its Display would also
        // quote the offending line (which may hold a key): only the message
        // and where it is are kept.
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        MerchantsFileError::file(format!("is not valid TOML: {at}{}", e.message().trim()))
    })?;
    if let Some(key) = root.keys().find(|k| k.as_str() != "merchant") {
        return Err(MerchantsFileError::file(format!(
            "has an unknown top-level key `{key}` (only [[merchant]] tables are read)"
        )));
    }
    let tables = match root.get("merchant") {
        None => return Err(MerchantsFileError::file("has no [[merchant]] table")),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            return Err(MerchantsFileError::file(
                "`merchant` must be [[merchant]] tables (an array of tables)",
            ))
        }
    };
    let mut names = HashSet::new();
    let mut entries = Vec::with_capacity(tables.len());
    for (i, item) in tables.iter().enumerate() {
        let position = format!("#{}", i + 1);
        let toml::Value::Table(table) = item else {
            return Err(MerchantsFileError {
                merchant: Some(position),
                field: None,
                reason: "must be a table ([[merchant]])".to_owned(),
            });
        };
        let entry = Table {
            table,
            label: table
                .get("name")
                .and_then(toml::Value::as_str)
                .filter(|n| valid_name(n))
                .map_or(position, str::to_owned),
        }
        .entry(&env, &read)?;
        if !names.insert(entry.name.clone()) {
            return Err(MerchantsFileError {
                merchant: Some(entry.name),
                field: Some("name".to_owned()),
                reason: "is used by an earlier merchant: names must be unique".to_owned(),
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// One merchant from field/value pairs, checked exactly as a `[[merchant]]`
/// table is: how the `WECHAT_*` variables define `default` (each variable
/// maps to the field of the same meaning), so both ways share every rule.
pub fn merchant_from_fields(
    fields: &[(&str, &str)],
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<MerchantEntry, MerchantsFileError> {
    let table: toml::Table = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), toml::Value::String((*v).to_owned())))
        .collect();
    let label = fields
        .iter()
        .find(|(k, _)| *k == "name")
        .map_or("#1", |(_, v)| v)
        .to_owned();
    Table {
        table: &table,
        label,
    }
    .entry(&env, &read)
}

impl MerchantEntry {
    /// A direct merchant (no sub merchant, no certificate paths): what the
    /// `WECHAT_*` variables define, as `default`.
    pub fn direct(name: &str, merchant: Merchant, sign_type: SignType) -> Self {
        Self {
            name: name.to_owned(),
            merchant,
            sign_type,
            sub_mch_id: None,
            sub_app_id: None,
            client_cert: None,
            client_key: None,
            client_p12: None,
            client_p12_password: None,
            v3: None,
        }
    }

    /// The protocol this merchant's orders are placed, queried and paid in.
    pub fn api_version(&self) -> ApiVersion {
        if self.v3.is_some() {
            ApiVersion::V3
        } else {
            ApiVersion::V2
        }
    }

    /// The merchant number the money goes to: the sub merchant's in
    /// service-provider mode, else the merchant's own.
    pub fn payee_mch_id(&self) -> &str {
        self.sub_mch_id.as_deref().unwrap_or(&self.merchant.mch_id)
    }
}

/// Every merchant a deployment acts for, found by name (a request's
/// `merchant`) or by the numbers WeChat's messages carry (`mch_id` and, in
/// service-provider mode, `sub_mch_id`). Built once at start-up; each pair of
/// numbers names one merchant, so a message can only be checked with one key.
#[derive(Debug, Clone)]
pub struct MerchantBook {
    entries: Vec<MerchantEntry>,
}

impl MerchantBook {
    /// Refuses two merchants with one name, or with the same mch_id and
    /// sub_mch_id (a notification for them could not be told apart).
    pub fn new(entries: Vec<MerchantEntry>) -> Result<Self, MerchantsFileError> {
        if entries.is_empty() {
            return Err(MerchantsFileError::file("no merchant is configured"));
        }
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        for e in &entries {
            if !names.insert(e.name.as_str()) {
                return Err(MerchantsFileError {
                    merchant: Some(e.name.clone()),
                    field: Some("name".to_owned()),
                    reason: "is defined twice (the WECHAT_* variables define `default`)".to_owned(),
                });
            }
            if !numbers.insert((e.merchant.mch_id.as_str(), e.sub_mch_id.as_deref())) {
                return Err(MerchantsFileError {
                    merchant: Some(e.name.clone()),
                    field: Some(if e.sub_mch_id.is_some() { "sub_mch_id" } else { "mch_id" }.to_owned()),
                    reason: "is another merchant's too: each mch_id (with its sub_mch_id) may appear once"
                        .to_owned(),
                });
            }
        }
        Ok(Self { entries })
    }

    /// The merchant a request names.
    pub fn get(&self, name: &str) -> Option<&MerchantEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The merchant a WeChat message is for, by its `mch_id` and `sub_mch_id`
    /// (absent or empty: a direct merchant).
    pub fn for_message(&self, mch_id: &str, sub_mch_id: Option<&str>) -> Option<&MerchantEntry> {
        let sub = sub_mch_id.filter(|s| !s.is_empty());
        self.entries
            .iter()
            .find(|e| e.merchant.mch_id == mch_id && e.sub_mch_id.as_deref() == sub)
    }

    pub fn entries(&self) -> &[MerchantEntry] {
        &self.entries
    }
}

/// The fields only a v3 merchant may have.
const V3_FIELDS: [&str; 6] = [
    "apiv3_key",
    "apiv3_key_env",
    "private_key",
    "serial_no",
    "wechatpay_public_key",
    "wechatpay_public_key_id",
];

/// The rule of a request's `merchant` ([`MerchantName`]).
fn valid_name(name: &str) -> bool {
    MerchantName::parse(name).is_ok()
}

/// At most 32 ASCII letters and digits (WeChat's appid, as `WECHAT_APP_ID`).
fn valid_app_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Digits only (a mch_id or sub_mch_id, as `WECHAT_MCH_ID`).
fn valid_mch_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// One table being read, and the name its errors carry.
struct Table<'a> {
    table: &'a toml::Table,
    label: String,
}

impl Table<'_> {
    fn error(&self, field: &str, reason: impl Into<String>) -> MerchantsFileError {
        MerchantsFileError {
            merchant: Some(self.label.clone()),
            field: Some(field.to_owned()),
            reason: reason.into(),
        }
    }

    /// The field's string, `None` when absent; any other type is refused
    /// without saying what it was.
    fn string(&self, field: &str) -> Result<Option<&str>, MerchantsFileError> {
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(field, "must be a string")),
        }
    }

    fn required(&self, field: &str) -> Result<&str, MerchantsFileError> {
        self.string(field)?
            .ok_or_else(|| self.error(field, "is missing"))
    }

    /// An optional field that, when written, is checked by `valid`.
    fn checked(
        &self,
        field: &str,
        valid: fn(&str) -> bool,
        rule: &str,
    ) -> Result<Option<String>, MerchantsFileError> {
        match self.string(field)? {
            None => Ok(None),
            Some(v) if valid(v) => Ok(Some(v.to_owned())),
            Some(_) => Err(self.error(field, rule)),
        }
    }

    fn entry(
        &self,
        env: &impl Fn(&str) -> Option<String>,
        read: &impl Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<MerchantEntry, MerchantsFileError> {
        if let Some(key) = self.table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(self.error(key, "is not a known field"));
        }
        let name = self.required("name")?;
        if !valid_name(name) {
            return Err(self.error("name", "must be 1 to 32 of A-Z, a-z, 0-9, _ and -"));
        }
        let app_id = self.required("app_id")?;
        if !valid_app_id(app_id) {
            return Err(self.error("app_id", "must be up to 32 letters and digits"));
        }
        let mch_id = self.required("mch_id")?;
        if !valid_mch_id(mch_id) {
            return Err(self.error("mch_id", "must be digits"));
        }
        let v3 = match self.string("api_version")? {
            None | Some("v2") => {
                for field in V3_FIELDS {
                    if self.table.contains_key(field) {
                        return Err(self.error(field, "is only for api_version = \"v3\""));
                    }
                }
                None
            }
            Some("v3") => Some(self.v3(env, read)?),
            Some(_) => return Err(self.error("api_version", "must be \"v2\" or \"v3\"")),
        };
        let api_key = match (&v3, self.has_api_key()) {
            // A v3 merchant may have no APIv2 key (merchants onboarded since
            // 2024 are given none). Its v2 paths (a v2 notification, a
            // cloud-pay forward) must then verify nothing: a random key that
            // nobody holds makes every v2 signature for it fail, closed.
            (Some(_), false) => ApiKey::unguessable(),
            _ => self.api_key(env)?,
        };
        let sign_type = match self.string("sign_type")? {
            None => SignType::Md5,
            Some(s) => s
                .parse()
                .map_err(|_| self.error("sign_type", "must be MD5 or HMAC-SHA256"))?,
        };
        let sub_mch_id = self.checked("sub_mch_id", valid_mch_id, "must be digits")?;
        let sub_app_id = self.checked(
            "sub_app_id",
            valid_app_id,
            "must be up to 32 letters and digits",
        )?;
        if sub_app_id.is_some() && sub_mch_id.is_none() {
            return Err(self.error(
                "sub_app_id",
                "needs sub_mch_id (it is the sub merchant's appid in service-provider mode)",
            ));
        }
        if sub_mch_id.as_deref() == Some(mch_id) {
            return Err(self.error(
                "sub_mch_id",
                "must differ from mch_id (the provider's own number)",
            ));
        }
        let non_empty = |s: &str| !s.is_empty();
        let client_cert = self.checked("client_cert", non_empty, "must not be empty")?;
        let client_key = self.checked("client_key", non_empty, "must not be empty")?;
        let client_p12 = self.checked("client_p12", non_empty, "must not be empty")?;
        let client_p12_password = self.string("client_p12_password")?.map(str::to_owned);
        match (&client_cert, &client_key, &client_p12) {
            (Some(_), None, _) => {
                return Err(self.error("client_key", "must be set too: client_cert needs it"))
            }
            (None, Some(_), _) => {
                return Err(self.error("client_cert", "must be set too: client_key needs it"))
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(self.error(
                    "client_p12",
                    "cannot be used with client_cert and client_key (one certificate per merchant)",
                ))
            }
            _ => {}
        }
        if client_p12_password.is_some() && client_p12.is_none() {
            return Err(self.error("client_p12_password", "needs client_p12"));
        }
        Ok(MerchantEntry {
            name: name.to_owned(),
            merchant: Merchant {
                app_id: app_id.to_owned(),
                mch_id: mch_id.to_owned(),
                api_key,
            },
            sign_type,
            sub_mch_id,
            sub_app_id,
            client_cert,
            client_key,
            client_p12,
            client_p12_password,
            v3,
        })
    }

    fn has_api_key(&self) -> bool {
        self.table.contains_key("api_key") || self.table.contains_key("api_key_env")
    }

    /// A v3 merchant's fields, with its key files read and checked.
    fn v3(
        &self,
        env: &impl Fn(&str) -> Option<String>,
        read: &impl Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<V3Merchant, MerchantsFileError> {
        let apiv3_key = match (self.string("apiv3_key")?, self.string("apiv3_key_env")?) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "apiv3_key_env",
                    "cannot be used with apiv3_key: give the key or the variable holding it",
                ))
            }
            (None, None) => {
                return Err(self.error("apiv3_key", "is missing (or give apiv3_key_env)"))
            }
            (Some(key), None) => {
                Apiv3Key::parse(key).map_err(|reason| self.error("apiv3_key", reason))?
            }
            (None, Some(var)) => {
                let value = env(var).ok_or_else(|| {
                    self.error("apiv3_key_env", format!("names {var}, which is not set"))
                })?;
                Apiv3Key::parse(&value).map_err(|reason| {
                    self.error("apiv3_key_env", format!("names {var}, which {reason}"))
                })?
            }
        };
        let serial_no = self.required("serial_no")?;
        if !(1..=64).contains(&serial_no.len()) || !serial_no.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(self.error("serial_no", "must be the API certificate's serial in hex"));
        }
        let private_key_path = self.required("private_key")?;
        let pem = read(private_key_path).map_err(|e| {
            self.error(
                "private_key",
                format!("{private_key_path} cannot be read: {e}"),
            )
        })?;
        let signer = MerchantSigner::from_pem(&pem, serial_no)
            .map_err(|e| self.error("private_key", format!("{private_key_path} {e}")))?;
        let public_key_path = self.string("wechatpay_public_key")?;
        let public_key = match (public_key_path, self.string("wechatpay_public_key_id")?) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.error(
                    "wechatpay_public_key_id",
                    "must be set too: the public key is named by its PUB_KEY_ID_…",
                ))
            }
            (None, Some(_)) => {
                return Err(self.error(
                    "wechatpay_public_key",
                    "must be set too (the path of pub_key.pem): wechatpay_public_key_id needs it",
                ))
            }
            (Some(path), Some(id)) => {
                if !id.starts_with("PUB_KEY_ID_") {
                    return Err(
                        self.error("wechatpay_public_key_id", "must start with PUB_KEY_ID_")
                    );
                }
                let pem = read(path).map_err(|e| {
                    self.error(
                        "wechatpay_public_key",
                        format!("{path} cannot be read: {e}"),
                    )
                })?;
                Some(
                    WechatKey::from_public_key_pem(id, &pem)
                        .map_err(|e| self.error("wechatpay_public_key", format!("{path} {e}")))?,
                )
            }
        };
        Ok(V3Merchant {
            apiv3_key,
            signer,
            public_key,
            private_key_path: private_key_path.to_owned(),
            public_key_path: public_key_path.map(str::to_owned),
        })
    }

    /// `api_key` or `api_key_env`, exactly one. The reasons never include the
    /// key (ApiKey::parse's reason is about its shape only).
    fn api_key(&self, env: &impl Fn(&str) -> Option<String>) -> Result<ApiKey, MerchantsFileError> {
        match (self.string("api_key")?, self.string("api_key_env")?) {
            (Some(_), Some(_)) => Err(self.error(
                "api_key_env",
                "cannot be used with api_key: give the key or the variable holding it",
            )),
            (None, None) => Err(self.error("api_key", "is missing (or give api_key_env)")),
            (Some(key), None) => ApiKey::parse(key).map_err(|reason| self.error("api_key", reason)),
            (None, Some(var)) => {
                if var.is_empty() {
                    return Err(self.error("api_key_env", "must name a variable"));
                }
                let value = env(var).ok_or_else(|| {
                    self.error("api_key_env", format!("names {var}, which is not set"))
                })?;
                ApiKey::parse(&value).map_err(|reason| {
                    self.error("api_key_env", format!("names {var}, which {reason}"))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn sample() -> String {
        format!(
            r#"
[[merchant]]
name = "shop"
app_id = "wx0123456789abcdef"
mch_id = "1900000109"
api_key = "{KEY_A}"
client_cert = "certs/shop.pem"
client_key = "certs/shop.key"

[[merchant]]
name = "tenant-1"
app_id = "wxfedcba9876543210"
mch_id = "1900000200"
api_key_env = "PROVIDER_KEY"
sign_type = "HMAC-SHA256"
sub_mch_id = "1900000201"
sub_app_id = "wx1111111111111111"
client_p12 = "certs/provider.p12"
client_p12_password = "secret-pw"
"#
        )
    }

    fn env_b(name: &str) -> Option<String> {
        (name == "PROVIDER_KEY").then(|| KEY_B.to_owned())
    }

    /// The sample's first merchant with `line` added (or replacing its key).
    fn one(extra: &str) -> String {
        format!(
            "[[merchant]]\nname = \"shop\"\napp_id = \"wx0123456789abcdef\"\nmch_id = \"1900000109\"\n{extra}\n"
        )
    }

    fn refused(text: &str) -> MerchantsFileError {
        parse_merchants(text, env_b).expect_err("must be refused")
    }

    fn field_of(text: &str) -> Option<String> {
        refused(text).field
    }

    #[test]
    fn a_file_with_a_direct_and_a_service_provider_merchant_is_read() {
        let entries = parse_merchants(&sample(), env_b).expect("valid");
        assert_eq!(entries.len(), 2);
        let shop = &entries[0];
        assert_eq!(shop.name, "shop");
        assert_eq!(shop.merchant.app_id, "wx0123456789abcdef");
        assert_eq!(shop.merchant.mch_id, "1900000109");
        assert_eq!(shop.merchant.api_key.expose_secret(), KEY_A);
        assert_eq!(shop.sign_type, SignType::Md5);
        assert_eq!(shop.sub_mch_id, None);
        assert_eq!(shop.client_cert.as_deref(), Some("certs/shop.pem"));
        assert_eq!(shop.client_key.as_deref(), Some("certs/shop.key"));
        assert_eq!(shop.client_p12, None);
        let tenant = &entries[1];
        assert_eq!(tenant.name, "tenant-1");
        assert_eq!(tenant.merchant.mch_id, "1900000200");
        assert_eq!(tenant.merchant.api_key.expose_secret(), KEY_B);
        assert_eq!(tenant.sign_type, SignType::HmacSha256);
        assert_eq!(tenant.sub_mch_id.as_deref(), Some("1900000201"));
        assert_eq!(tenant.sub_app_id.as_deref(), Some("wx1111111111111111"));
        assert_eq!(tenant.client_p12.as_deref(), Some("certs/provider.p12"));
        assert_eq!(tenant.client_p12_password.as_deref(), Some("secret-pw"));
    }

    #[test]
    fn debug_output_shows_neither_the_key_nor_the_p12_password() {
        let entries = parse_merchants(&sample(), env_b).expect("valid");
        let debug = format!("{entries:?}");
        assert!(!debug.contains(KEY_A) && !debug.contains(KEY_B), "{debug}");
        assert!(!debug.contains("secret-pw"), "{debug}");
        assert!(debug.contains("tenant-1"), "{debug}");
    }

    #[test]
    fn errors_name_the_merchant_and_field_but_never_the_key() {
        // A key one character short, and a key written as a number.
        let short = &KEY_A[..31];
        for text in [
            one(&format!("api_key = \"{short}\"")),
            one("api_key = 12345678901234"),
        ] {
            let e = refused(&text);
            assert_eq!(e.merchant.as_deref(), Some("shop"));
            assert_eq!(e.field.as_deref(), Some("api_key"));
            let shown = e.to_string();
            assert!(
                shown.contains("shop") && shown.contains("api_key"),
                "{shown}"
            );
            assert!(
                !shown.contains(short) && !shown.contains("12345678901234"),
                "{shown}"
            );
        }
        // A syntax error on the key's own line does not quote the line.
        let broken = format!("[[merchant]]\nname = \"shop\"\napi_key = \"{KEY_A}\" junk\n");
        let shown = refused(&broken).to_string();
        assert!(shown.contains("line 3"), "{shown}");
        assert!(!shown.contains(KEY_A), "{shown}");
    }

    #[test]
    fn the_key_comes_from_the_variable_api_key_env_names() {
        let entries =
            parse_merchants(&one("api_key_env = \"PROVIDER_KEY\""), env_b).expect("valid");
        assert_eq!(entries[0].merchant.api_key.expose_secret(), KEY_B);
        let unset = parse_merchants(&one("api_key_env = \"NOPE\""), no_env).expect_err("unset");
        assert_eq!(unset.field.as_deref(), Some("api_key_env"));
        assert!(unset.to_string().contains("NOPE"), "{unset}");
        let bad = parse_merchants(&one("api_key_env = \"K\""), |_| Some("short".to_owned()))
            .expect_err("bad key");
        assert_eq!(bad.field.as_deref(), Some("api_key_env"));
        assert!(!bad.to_string().contains("short"), "{bad}");
    }

    #[test]
    fn a_key_and_a_variable_together_or_neither_are_refused() {
        let both = one(&format!(
            "api_key = \"{KEY_A}\"\napi_key_env = \"PROVIDER_KEY\""
        ));
        assert_eq!(field_of(&both).as_deref(), Some("api_key_env"));
        assert_eq!(field_of(&one("")).as_deref(), Some("api_key"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = refused(&one(&format!("api_key = \"{KEY_A}\"\nsub_mchid = \"1\"")));
        assert_eq!(e.field.as_deref(), Some("sub_mchid"));
        let top = format!("title = \"x\"\n{}", one(&format!("api_key = \"{KEY_A}\"")));
        let e = refused(&top);
        assert_eq!(e.merchant, None);
        assert!(e.reason.contains("title"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a = one(&format!("api_key = \"{KEY_A}\""));
        let e = refused(&format!("{a}{a}"));
        assert_eq!(e.merchant.as_deref(), Some("shop"));
        assert_eq!(e.field.as_deref(), Some("name"));
    }

    #[test]
    fn names_app_ids_and_merchant_numbers_are_checked() {
        let with = |name: &str, app_id: &str, mch_id: &str| {
            format!("[[merchant]]\nname = \"{name}\"\napp_id = \"{app_id}\"\nmch_id = \"{mch_id}\"\napi_key = \"{KEY_A}\"\n")
        };
        let good = ("shop", "wx0123456789abcdef", "1900000109");
        assert!(parse_merchants(&with(good.0, good.1, good.2), no_env).is_ok());
        for (text, field) in [
            (with("", good.1, good.2), "name"),
            (with("has space", good.1, good.2), "name"),
            (with(&"n".repeat(33), good.1, good.2), "name"),
            (with(good.0, "wx-0123", good.2), "app_id"),
            (with(good.0, &"w".repeat(33), good.2), "app_id"),
            (with(good.0, "", good.2), "app_id"),
            (with(good.0, good.1, "19000x"), "mch_id"),
            (with(good.0, good.1, ""), "mch_id"),
        ] {
            assert_eq!(field_of(&text).as_deref(), Some(field), "{text}");
        }
        // A table without a usable name is named by its position.
        let nameless =
            format!("[[merchant]]\napp_id = \"wx1\"\nmch_id = \"1\"\napi_key = \"{KEY_A}\"\n");
        let e = refused(&nameless);
        assert_eq!(
            (e.merchant.as_deref(), e.field.as_deref()),
            (Some("#1"), Some("name"))
        );
        let missing_mch =
            format!("[[merchant]]\nname = \"a\"\napp_id = \"wx1\"\napi_key = \"{KEY_A}\"\n");
        assert_eq!(field_of(&missing_mch).as_deref(), Some("mch_id"));
    }

    #[test]
    fn sign_types_are_md5_or_hmac_sha256() {
        let key = format!("api_key = \"{KEY_A}\"\n");
        let hmac = parse_merchants(&one(&format!("{key}sign_type = \"HMAC-SHA256\"")), no_env)
            .expect("valid");
        assert_eq!(hmac[0].sign_type, SignType::HmacSha256);
        assert_eq!(
            field_of(&one(&format!("{key}sign_type = \"SHA1\""))).as_deref(),
            Some("sign_type")
        );
        assert_eq!(
            field_of(&one(&format!("{key}sign_type = \"md5\""))).as_deref(),
            Some("sign_type")
        );
    }

    #[test]
    fn service_provider_fields_are_checked() {
        let key = format!("api_key = \"{KEY_A}\"\n");
        let cases = [
            ("sub_app_id = \"wx1111111111111111\"", "sub_app_id"),
            ("sub_mch_id = \"12a\"", "sub_mch_id"),
            ("sub_mch_id = \"1900000109\"", "sub_mch_id"),
            ("sub_mch_id = \"1\"\nsub_app_id = \"wx_1\"", "sub_app_id"),
        ];
        for (extra, field) in cases {
            let text = one(&format!("{key}{extra}"));
            assert_eq!(field_of(&text).as_deref(), Some(field), "{extra}");
        }
        let alone = parse_merchants(&one(&format!("{key}sub_mch_id = \"1900000201\"")), no_env)
            .expect("sub_app_id is optional");
        assert_eq!(alone[0].sub_mch_id.as_deref(), Some("1900000201"));
        assert_eq!(alone[0].sub_app_id, None);
    }

    #[test]
    fn client_certificates_are_cert_and_key_together_or_a_p12() {
        let key = format!("api_key = \"{KEY_A}\"\n");
        let cases = [
            ("client_cert = \"c.pem\"", "client_key"),
            ("client_key = \"k.pem\"", "client_cert"),
            (
                "client_cert = \"c.pem\"\nclient_key = \"k.pem\"\nclient_p12 = \"c.p12\"",
                "client_p12",
            ),
            ("client_p12_password = \"pw\"", "client_p12_password"),
            ("client_p12 = \"\"", "client_p12"),
        ];
        for (extra, field) in cases {
            let text = one(&format!("{key}{extra}"));
            assert_eq!(field_of(&text).as_deref(), Some(field), "{extra}");
        }
        let p12 = parse_merchants(&one(&format!("{key}client_p12 = \"c.p12\"")), no_env)
            .expect("a p12 alone");
        assert_eq!(p12[0].client_p12.as_deref(), Some("c.p12"));
        assert_eq!(p12[0].client_p12_password, None);
    }

    #[test]
    fn a_file_must_hold_merchant_tables() {
        assert_eq!(refused("").merchant, None);
        assert!(refused("merchant = 1").reason.contains("[[merchant]]"));
        let single = format!(
            "[merchant]\nname = \"shop\"\napp_id = \"wx1\"\nmch_id = \"1\"\napi_key = \"{KEY_A}\"\n"
        );
        assert!(refused(&single).reason.contains("array of tables"));
        assert!(refused("[[merchant]]\nname = ").reason.contains("TOML"));
    }

    #[test]
    fn the_book_finds_a_message_by_its_numbers_and_refuses_ambiguity() {
        let entries = parse_merchants(&sample(), env_b).expect("sample");
        let default = MerchantEntry::direct(
            "default",
            Merchant {
                app_id: "wxd".into(),
                mch_id: "1900000200".into(),
                api_key: ApiKey::parse(KEY_A).expect("key"),
            },
            SignType::Md5,
        );
        let mut all = entries.clone();
        // The provider's own number as a direct merchant beside its sub merchant.
        all.push(default.clone());
        let book = MerchantBook::new(all).expect("distinct numbers");
        assert_eq!(
            book.get("tenant-1").map(|e| e.payee_mch_id()),
            Some("1900000201")
        );
        assert_eq!(
            book.for_message("1900000200", Some("1900000201"))
                .map(|e| e.name.as_str()),
            Some("tenant-1")
        );
        assert_eq!(
            book.for_message("1900000200", None)
                .map(|e| e.name.as_str()),
            Some("default")
        );
        assert_eq!(
            book.for_message("1900000200", Some(""))
                .map(|e| e.name.as_str()),
            Some("default")
        );
        assert!(book.for_message("1900000200", Some("1900000999")).is_none());
        assert!(book.for_message("1900000109", Some("1900000201")).is_none());
        assert_eq!(
            book.for_message("1900000109", None)
                .map(|e| e.name.as_str()),
            Some("shop")
        );

        let mut twice = entries.clone();
        twice.push(MerchantEntry {
            name: "default".into(),
            ..entries[0].clone()
        });
        assert_eq!(
            MerchantBook::new(twice).unwrap_err().field.as_deref(),
            Some("mch_id")
        );
        let mut same_name = entries.clone();
        same_name.push(MerchantEntry {
            merchant: default.merchant.clone(),
            ..entries[0].clone()
        });
        assert_eq!(
            MerchantBook::new(same_name).unwrap_err().field.as_deref(),
            Some("name")
        );
        assert!(MerchantBook::new(Vec::new()).is_err());
    }

    const APIV3: &str = "0123456789abcdefABCDEFGHijklmnop";

    /// The key files a v3 table names, served from core's test vectors.
    fn files(path: &str) -> Result<Vec<u8>, String> {
        match path {
            "keys/apiclient_key.pem" => {
                Ok(include_bytes!("../../tests/testdata/v3/merchant_key.pem").to_vec())
            }
            "keys/pub_key.pem" => {
                Ok(include_bytes!("../../tests/testdata/v3/merchant_pub.pem").to_vec())
            }
            "keys/cert.pem" => {
                Ok(include_bytes!("../../tests/testdata/v3/platform_cert.pem").to_vec())
            }
            _ => Err("No such file or directory (os error 2)".to_owned()),
        }
    }

    fn v3(extra: &str) -> String {
        format!(
            "[[merchant]]\nname = \"new-shop\"\napi_version = \"v3\"\napp_id = \"wx2222222222222222\"\nmch_id = \"1900000300\"\n\
             apiv3_key = \"{APIV3}\"\nprivate_key = \"keys/apiclient_key.pem\"\nserial_no = \"3775B6A45ACD5888\"\n{extra}\n"
        )
    }

    fn v3_refused(text: &str) -> MerchantsFileError {
        parse_merchants_with_files(text, env_b, files).expect_err("must be refused")
    }

    #[test]
    fn v3_merchants_in_both_key_modes_sit_beside_v2_ones() {
        let text = format!(
            "{}\n{}\n{}",
            sample(),
            v3("wechatpay_public_key = \"keys/pub_key.pem\"\nwechatpay_public_key_id = \"PUB_KEY_ID_0119000003002025\""),
            v3("").replace("new-shop", "cert-shop").replace("1900000300", "1900000301")
        );
        let entries = parse_merchants_with_files(&text, env_b, files).expect("valid");
        assert_eq!(
            entries
                .iter()
                .map(MerchantEntry::api_version)
                .collect::<Vec<_>>(),
            [
                ApiVersion::V2,
                ApiVersion::V2,
                ApiVersion::V3,
                ApiVersion::V3
            ]
        );
        let public = entries[2].v3.as_ref().expect("v3");
        assert_eq!(public.signer.serial_no(), "3775B6A45ACD5888");
        assert_eq!(
            public.public_key.as_ref().map(|k| k.id()),
            Some("PUB_KEY_ID_0119000003002025")
        );
        assert_eq!(public.apiv3_key.expose_secret(), APIV3);
        // No public key: WeChat is verified by platform certificates.
        assert!(entries[3].v3.as_ref().expect("v3").public_key.is_none());
        // Nothing secret in Debug.
        let debug = format!("{entries:?}");
        assert!(
            !debug.contains(APIV3) && !debug.contains("PRIVATE KEY"),
            "{debug}"
        );
        // No APIv2 key given: v2 messages for this merchant verify under nothing anyone holds.
        assert_ne!(
            entries[2].merchant.api_key.expose_secret(),
            entries[3].merchant.api_key.expose_secret()
        );
    }

    #[test]
    fn a_bad_v3_table_names_the_merchant_and_field_never_the_content() {
        let cases = [
            (v3("").replace("keys/apiclient_key.pem", "keys/missing.pem"), "private_key", "cannot be read"),
            (v3("").replace("keys/apiclient_key.pem", "keys/pub_key.pem"), "private_key", "PKCS#8"),
            (v3("").replace(APIV3, "too-short"), "apiv3_key", "32 bytes"),
            (v3("").replace("3775B6A45ACD5888", "not hex!"), "serial_no", "hex"),
            (v3("wechatpay_public_key = \"keys/pub_key.pem\""), "wechatpay_public_key_id", "must be set too"),
            (v3("wechatpay_public_key = \"keys/cert.pem\"\nwechatpay_public_key_id = \"PUB_KEY_ID_1\""), "wechatpay_public_key", "PEM public key"),
            (v3("wechatpay_public_key = \"keys/pub_key.pem\"\nwechatpay_public_key_id = \"1234\""), "wechatpay_public_key_id", "PUB_KEY_ID_"),
            (v3("").replace("api_version = \"v3\"", "api_version = \"v4\""), "api_version", "v2"),
            (one(&format!("api_key = \"{KEY_A}\"\nserial_no = \"AB\"")), "serial_no", "only for api_version"),
        ];
        for (text, field, says) in cases {
            let e = v3_refused(&text);
            let shown = e.to_string();
            assert_eq!(e.field.as_deref(), Some(field), "{shown}");
            assert!(shown.contains(says), "{shown}");
            assert!(
                !shown.contains(APIV3) && !shown.contains("BEGIN"),
                "{shown}"
            );
        }
        // Without a reader, a v3 table cannot be loaded (and says why).
        let e = parse_merchants(&v3(""), env_b).expect_err("no reader");
        assert_eq!(e.field.as_deref(), Some("private_key"));
    }
}
