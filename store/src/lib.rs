//! wxpay-store: where orders live and how their changes travel.
//!
//! - [`interface`]: the `Store` trait and its types; [`PgStore`] (the split
//!   deployment) and [`SqliteStore`] (the embedded default) implement it, with
//!   their migrations under `migrations/`;
//! - [`events`]: the event bus seen from both ends (publisher, feed), the Redis
//!   publisher and the outbox [`Relay`](relay::Relay); [`LocalBus`] is the
//!   in-process bus of the single-process mode;
//! - [`ledger`]: the one operation every caller uses to change an order's status
//!   (or apply a refund) and hand the committed event to the bus;
//! - [`refunds`]: the refund types and the rules every backend runs them by;
//! - [`console`]: what the operator console reads, its audit log and anomaly
//!   resolutions;
//! - [`retention`]: deleting what is kept only for a while (`RETENTION_DAYS`);
//! - WeChat Pay v3 platform certificates per merchant ([`PlatformCertificate`]),
//!   shared by every replica.
//!
//! `suite`, `console_suite` and `testing` (behind the `testing` feature) are for
//! tests only.

mod columns;
pub mod console;
pub mod events;
pub mod interface;
pub mod ledger;
pub mod local_bus;
mod marks;
pub mod postgres;
pub mod refunds;
pub mod relay;
pub mod retention;
pub mod sqlite;

#[cfg(feature = "testing")]
pub mod certificate_suite;
#[cfg(feature = "testing")]
pub mod console_suite;
#[cfg(feature = "testing")]
pub mod refund_suite;
#[cfg(feature = "testing")]
pub mod suite;
#[cfg(feature = "testing")]
pub mod testing;

pub use events::{EventFeed, EventPublisher, EventSink, PublishError, RedisPublisher};
pub use interface::{
    Anomaly, AnomalyKind, DueOrder, Guard, InsertOutcome, NotificationRecord, OutboxBacklog,
    PlatformCertificate, Store, StoreError, Transition, TransitionOutcome,
};
pub use ledger::Ledger;
pub use local_bus::LocalBus;
pub use postgres::PgStore;
pub use refunds::{DueRefund, RefundOutcome, RefundPlacement, RefundUpdate, MAX_REFUNDS_PER_ORDER};
pub use relay::Relay;
pub use retention::Retention;
pub use sqlite::SqliteStore;
