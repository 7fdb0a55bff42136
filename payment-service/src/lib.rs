//! payment-service: the `PaymentService` gRPC server. It owns creating,
//! querying and closing orders at WeChat ([`service::Payments`]), the background
//! [`reconciler`] that settles what no notification settled, the daily bill
//! reconciliation ([`bill_run`]), WeChat Pay behind one interface per merchant
//! with its v2 implementation ([`wechat`]), and how its errors reach callers
//! ([`error`]).
//! The domain and protocol are `wxpay-core`'s; storage, events and the
//! transition-then-publish operation are `wxpay-store`'s.

pub mod application;
pub mod bill_run;
pub mod config;
pub mod error;
pub mod grpc;
pub mod reconciler;
pub mod service;
pub mod wechat;

pub use application::{Application, Settings};
