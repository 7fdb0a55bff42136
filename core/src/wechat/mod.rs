//! The WeChat Pay v2 protocol: signing, the XML codec, `wx.requestPayment`
//! parameters, the refund-notification cipher, Beijing time, the merchant
//! whose key signs it all, the merchants file that lists several, the trade
//! types, `orderquery`'s request and reply, and the cloud-pay forwarder's
//! signature. Pure functions; the HTTP clients live in the services.

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
pub mod xml;

pub use merchant::Merchant;
pub use merchants::{parse_merchants, MerchantBook, MerchantEntry, MerchantsFileError};
pub use sign::{ApiKey, SignError, SignType};
pub use trade_type::{TradeType, UnknownTradeType};
pub use xml::{Fields, XmlError};
