//! The poller: `OrderStatusService.WatchOrder`, order status streams fed by one
//! shared event feed per process (Redis pub/sub, or the in-process bus), with a
//! QueryOrder fallback for lost notifications, and the same watch over
//! WebSocket and SSE for mini programs ([`http_watch`], with a per-order watch
//! token). `main` only wires telemetry, config and the shutdown signal to
//! [`Application`].

pub mod application;
mod backoff;
pub mod client;
pub mod config;
pub mod confirm;
pub mod error;
pub mod fallback;
pub mod http_watch;
pub mod hub;
pub mod metrics;
pub mod order_state;
pub mod redis_feed;
pub mod service;
mod snapshots;

pub use application::Application;
pub use config::Config;
pub use fallback::{Fallback, GrpcQuerier, OrderQuerier, QueryError};
pub use hub::{FeedSink, Hub};
pub use service::Deadlines;
