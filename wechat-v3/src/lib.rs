//! wxpay-wechat-v3: the I/O half of WeChat Pay API v3, shared by
//! payment-service (which calls WeChat) and the gateway (which verifies
//! WeChat's notifications). The protocol itself — signing, verification,
//! decryption, the JSON models — is pure and lives in
//! `wxpay_core::wechat::v3`; this crate sends and receives with it.
//!
//! - [`http`]: the wire (one reqwest client per API base, timeouts, retries,
//!   capped answers, typed non-2xx errors);
//! - [`client`]: [`V3Client`], one merchant's signed requests whose answers
//!   are verified before a byte of them is parsed;
//! - [`error`]: [`V3Error`], and what a retry can fix;
//! - [`keys`]: [`PlatformKeys`], WeChat's keys per merchant (its public key and
//!   platform certificates downloaded, kept in the database, refreshed).

pub mod client;
pub mod error;
pub mod http;
pub mod keys;

pub use client::{ResponseVerifier, V3Client, Verified};
pub use error::V3Error;
pub use http::{BuildError, ClientOptions, V3Http, USER_AGENT_VALUE};
pub use keys::{KeysOptions, PlatformKeys, RefreshError, CERTIFICATES_PATH};
/// The request method [`V3Client::send`] takes (reqwest's, re-exported).
pub use reqwest::Method;
