//! The poller (being built).
