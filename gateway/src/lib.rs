//! The gateway: the only public-facing part of the system. It terminates
//! WeChat Pay's notifications (v2 payment XML, refund XML, the cloud-pay JSON
//! callback, the v3 payment and refund JSON), verifies them, applies each
//! exactly once through the store's conditional transition (with its outbox
//! event), and publishes the change after the commit. One deployment serves
//! every merchant in its [`MerchantBook`](wxpay_core::wechat::MerchantBook):
//! each message is checked with the key of the merchant it names, and applied
//! only to that merchant's orders. Every message is proven in one place,
//! `proof`, before anything is read or written for it (`wechat_keys` hands it
//! WeChat's v3 keys); each dialect's parser (`notify` for v2, `notify_v3`)
//! reads a payment into one typed notice that `pay_notice` decides and
//! `payment` applies; a refund result likewise (`refund` for v2, `refund_v3`)
//! into one that `refund_notice` decides and applies; `cloudpay` decides its
//! own (`orderquery` asks WeChat before a cloud-pay SUCCESS is believed);
//! `routes` is the thin HTTP layer; `connections` holds the edge's limits
//! (timeouts, caps, load shedding); `readiness` the probe's background check;
//! `application` runs it all.

pub mod application;
pub mod audit;
pub mod cloudpay;
pub mod config;
pub mod connections;
pub mod metrics;
pub mod notify;
pub mod notify_v3;
pub mod orderquery;
pub mod paid_cache;
pub mod pay_notice;
pub mod payment;
pub mod proof;
pub mod readiness;
pub mod refund;
pub mod refund_notice;
pub mod refund_v3;
pub mod refusals;
pub mod routes;
pub mod state;
pub mod verdict;
pub mod wechat_keys;

pub use application::Application;
pub use config::{CloudpaySecret, GatewayConfig};
pub use readiness::Readiness;
pub use routes::app;
pub use state::AppState;
pub use verdict::{Judged, Kind, Verdict};
