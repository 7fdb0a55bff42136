//! payment-service: the domain (orders, money, identifiers, state machine), the
//! WeChat Pay v2 protocol and client, order storage with its outbox, event
//! publishing, and the `PaymentService` gRPC server. The gateway and the poller
//! use this library; only the binary wires it to the network.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod wechat;
