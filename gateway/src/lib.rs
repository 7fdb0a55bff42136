//! The gateway (being built).
