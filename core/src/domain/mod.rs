//! The pure domain: money, identifiers, order status and its state machine,
//! refunds and theirs.
//! Nothing here does I/O; every type validates once, at the edge, so an invalid
//! value cannot exist past the boundary.

mod ids;
mod json;
mod money;
mod order;
mod reconciliation;
mod refund;
mod status;

pub use ids::{
    Attach, Caller, ClientIp, Description, IdempotencyKey, MerchantName, Nonce, OpenId,
    OutRefundNo, OutTradeNo, ProductId, RefundReason, SceneInfo, TransactionId, ValidationError,
};
pub use money::Fee;
pub use order::{EventSource, NewOrder, Order, OrderEvent, Placement};
pub use reconciliation::{BillReport, Discrepancy, DiscrepancyKind};
pub use refund::{NewRefund, Refund, RefundStatus};
pub use status::OrderStatus;
