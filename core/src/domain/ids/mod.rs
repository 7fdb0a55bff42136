//! Identifiers and bounded strings that WeChat limits: out_trade_no, nonce,
//! description (`body`), attach, openid, idempotency keys and their callers,
//! client IPs, and a
//! refund's number and reason, and what places an order with a given merchant
//! and trade type (merchant name, product id).
//!
//! The types are declared here, so their private field is visible only to this
//! module's children: `newtype` (the macro, the error and the shared checks),
//! `generated` (order numbers and nonces, which the product mints) and
//! `received` (the values it only parses).

mod generated;
mod newtype;
mod placement;
mod received;

pub use newtype::ValidationError;

use newtype::string_newtype;

string_newtype!(
    /// The merchant's order number: 1..=32 of `[0-9A-Za-z_-|*]`, unique per merchant.
    OutTradeNo
);
string_newtype!(
    /// A random string of 1..=32 ASCII letters and digits.
    Nonce
);
string_newtype!(
    /// What the payer sees (`body`): 1..=128 bytes of UTF-8 (WeChat's String(128)).
    Description
);
string_newtype!(
    /// Merchant data echoed back in the notification: 0..=127 bytes.
    Attach
);
string_newtype!(
    /// The payer's openid under the merchant's app.
    OpenId
);
string_newtype!(
    /// The caller's idempotency key for CreateOrder.
    IdempotencyKey
);
string_newtype!(
    /// Who placed an order: the name of the `API_TOKEN` entry the caller
    /// authenticated with (1..=32 of `[A-Za-z0-9_-]`). Idempotency keys are
    /// unique per caller, so two services' "cart-42" are two orders.
    Caller
);
string_newtype!(
    /// WeChat's own payment id (`transaction_id`).
    TransactionId
);
string_newtype!(
    /// The caller's refund number (`out_refund_no`): 1..=64 of `[0-9A-Za-z_-|*@]`.
    /// It is also the refund's idempotency key, at WeChat and here.
    OutRefundNo
);
string_newtype!(
    /// Why money goes back (`refund_desc`): 0..=80 bytes of UTF-8, shown to the payer.
    RefundReason
);
string_newtype!(
    /// The payer's IP address, as WeChat's `spbill_create_ip` wants it.
    ClientIp
);
string_newtype!(
    /// Which configured merchant account an order is placed with (the name of
    /// its `[[merchant]]` table, or `default`): 1..=32 of `[A-Za-z0-9_-]`.
    MerchantName
);
string_newtype!(
    /// A NATIVE order's `product_id`, the product its QR code is for: 1..=32 of
    /// `[A-Za-z0-9_-]` (WeChat's String(32)).
    ProductId
);
string_newtype!(
    /// An MWEB (H5) order's `scene_info`: the JSON WeChat asks for, an object
    /// with an `h5_info` object naming its `type` (`Wap`, `IOS`, `Android`), at
    /// most 256 bytes.
    SceneInfo
);
