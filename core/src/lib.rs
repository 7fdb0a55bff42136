//! wxpay-core: what every part of the product agrees on, with no I/O.
//!
//! - [`domain`]: money, identifiers, orders, their status and its state machine;
//! - [`wechat`]: the WeChat Pay v2 protocol (canonical string, MD5 / HMAC-SHA256,
//!   the XML codec, `wx.requestPayment` parameters, the refund `req_info` cipher,
//!   Beijing time) as pure functions tested against the official vectors;
//! - [`convert`]: the one mapping between the domain and the `wxpay.v1` messages;
//! - [`watch_token`]: the per-order read-only token a mini program watches with.
//!
//! It must not grow a dependency on tokio, a database, Redis or an HTTP client:
//! the sandbox builds on it alone.

pub mod convert;
pub mod domain;
pub mod watch_token;
pub mod wechat;
