//! The WeChat Pay v2 protocol: signing, the XML codec, `wx.requestPayment`
//! parameters and the refund-notification cipher are pure functions tested against
//! the official vectors; `client` is the one part that does I/O.

pub mod china_time;
pub mod client;
pub mod pay_params;
pub mod refund_crypto;
pub mod sign;
pub mod xml;

pub use client::{Merchant, WechatClient, WechatError};
pub use sign::{ApiKey, SignError, SignType};
pub use xml::{Fields, XmlError};
