//! The WeChat Pay API v3 protocol, pure: the merchant's request signature
//! ([`sign`]), the verification of what WeChat signs (responses and
//! notifications, [`verify`]), WeChat's keys in both modes (the WeChat Pay
//! public key and platform certificates, [`keys`]), the AES-256-GCM cipher of
//! notification resources and certificates ([`aead`]), what the payer gets
//! (`paySign` over RSA, [`pay_params`]), the JSON bodies ([`models`]) and
//! opening a notification in that order ([`notification`]), and the trade
//! bill's path and SHA1 check ([`bill`]).
//! No I/O: the services fetch, store and send; everything here is testable
//! against vectors made with independent tools (core/tests/testdata/v3).
//!
//! Crypto is `ring` (RSA PKCS#1 v1.5 SHA-256 sign and verify, AES-256-GCM):
//! it is already in the tree under rustls, well kept, constant-time for
//! private-key operations, and free of advisories. The `rsa` crate was not
//! chosen for anything that signs: it carries RUSTSEC-2023-0071 (the Marvin
//! timing side channel on private-key operations) with no fixed release.

pub mod aead;
pub mod bill;
pub mod keys;
pub mod models;
pub mod notification;
pub mod pay_params;
pub mod sign;
pub mod verify;

pub use aead::{Apiv3Key, DecryptError};
pub use keys::{KeyError, MerchantSigner, WechatKey, WechatKeys};
pub use verify::{SignedHeaders, VerifyError};

/// The only signature scheme v3 defines, named in `Authorization` and in
/// `Wechatpay-Signature-Type`.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// How far WeChat's `Wechatpay-Timestamp` may be from our clock, either way
/// (wechatpay-go's validator): a message 5 minutes old or more is refused.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;
