//! The WeChat Pay protocols. v2 here: signing, the XML codec, `wx.requestPayment`
//! parameters, the refund-notification cipher, Beijing time, the merchant
//! whose key signs it all, the merchants file that lists several, the trade
//! types, `orderquery`'s request and reply, and the cloud-pay forwarder's
//! signature; v3 (RSA signatures, AES-256-GCM, JSON) in [`v3`]. Pure
//! functions; the HTTP clients live in the services.

pub mod bill;
pub mod china_time;
pub mod cloudpay;
mod merchant;
pub mod merchants;
pub mod order_query;
pub mod pay_params;
pub mod refund_crypto;
pub mod sign;
mod trade_type;
pub mod v3;
pub mod xml;

pub use merchant::Merchant;
pub use merchants::{
    merchant_from_fields, parse_merchants, parse_merchants_with_files, ApiVersion, MerchantBook,
    MerchantEntry, MerchantsFileError, V3Merchant,
};
pub use sign::{ApiKey, SignError, SignType};
pub use trade_type::{TradeType, UnknownTradeType};
pub use xml::{Fields, XmlError};
