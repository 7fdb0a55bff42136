//! wxpay: the whole product in one process. `cargo run` starts payment-service,
//! the gateway, the poller and the WeChat Pay sandbox together ([`embedded`]),
//! on SQLite and an in-process event bus unless `DATABASE_URL` / `REDIS_URL`
//! say otherwise; `cargo run -- demo` walks one payment through it ([`demo`]).
//! The services themselves live in their crates; this crate only assembles them.

pub mod banner;
pub mod demo;
pub mod embedded;
pub mod querier;

pub use embedded::{Settings, Stack};
