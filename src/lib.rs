//! wxpay: the whole product in one process. `cargo run` starts payment-service,
//! the gateway, the poller and the WeChat Pay sandbox together ([`Stack`]), on
//! SQLite and an in-process event bus unless `DATABASE_URL` / `REDIS_URL` say
//! otherwise; `cargo run -- demo` walks one payment through it ([`demo`]).
//! The services themselves live in their crates; this crate only assembles them,
//! once, for `cargo run`, the demo, the tests and the benchmark ([`stack`]), and
//! says how the same [`Settings`] become the split deployment ([`split`]).

pub mod addresses;
pub mod banner;
pub mod demo;
pub mod labels;
pub mod querier;
pub mod settings;
pub mod split;
pub mod stack;

pub use addresses::Addresses;
pub use settings::{Bus, Settings, Storage};
pub use split::SplitEnv;
pub use stack::{Parts, Service, Stack};
