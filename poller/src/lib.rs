//! The poller: `OrderStatusService.WatchOrder`, order status streams fed by one
//! shared Redis pub/sub connection, with a QueryOrder fallback for lost
//! notifications. `main` only wires telemetry, config and the shutdown signal to
//! [`Application`].

pub mod app;
pub mod client;
pub mod config;
pub mod convert;
pub mod fallback;
pub mod hub;
pub mod local_feed;
pub mod metrics;
pub mod redis_feed;
pub mod service;

pub use app::Application;
pub use config::Config;
pub use fallback::{Fallback, GrpcQuerier, OrderQuerier, QueryError};
pub use hub::{EventFeed, FeedSink, Hub};
pub use local_feed::LocalBus;
pub use service::Deadlines;
