//! The merchant account a request is made for and a notification is checked
//! against. Its key never prints: `ApiKey`'s `Debug` is redacted.

use super::ApiKey;

/// The merchant this product acts for.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub app_id: String,
    pub mch_id: String,
    pub api_key: ApiKey,
}
