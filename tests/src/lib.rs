//! The end-to-end harness: runs the real binaries (`wechat-sandbox`,
//! `payment-service`, `gateway`, `poller`) as child processes, each on a free port,
//! against a fresh Postgres database and the local Redis, configured through the
//! environment exactly as a deployment configures them.
//!
//! It owns: finding (and building) the binaries, the [`Process`] guard that kills
//! a child when a test ends however it ends, and [`Stack`], which starts the four
//! services and waits until each one reports ready (gRPC health, `/readyz`).
//! It must not reach into the services' libraries to run them: the point of these
//! tests is the binaries as shipped, with their `main`, configuration and signals.
//!
//! Laid out as: `binaries` (finding and building them), `ports`, `process` (the
//! guard around one child), `probes` (connecting and the readiness checks) and
//! `stack` (the four services together), `redis` (a private redis-server for
//! tests that kill it), `postgres` (a private PostgreSQL server for the tests
//! that crash the database), `chaos` (the soak of issue 28: every
//! service twice, faults at random, money checked against WeChat's ledger), `cluster` (a private Redis Cluster of six nodes), `tools` (the Node and Python clients some tests
//! drive the stack with) and `browser` (headless chromium over chromedriver,
//! for the operator console's pages). Every public item is re-exported
//! here, so tests import from the crate root only.

mod binaries;
mod browser;
pub mod chaos;
mod cluster;
mod ports;
mod postgres;
mod probes;
mod process;
mod redis;
mod stack;
mod tools;
mod wait;

use wxpay_core::wechat::{ApiKey, Merchant};

pub use binaries::{binary, build_binaries, build_product, workspace_root, BINARIES, PRODUCT};
pub use browser::Browser;
pub use cluster::RedisCluster;
pub use ports::{free_port, free_ports};
pub use postgres::PrivatePostgres;
pub use process::Process;
pub use redis::PrivateRedis;
pub use stack::{Stack, StackOptions};
pub use tools::{npm_examples, python_venv, require_tool};
pub use wait::eventually;

/// The merchant every process of a stack shares (the sandbox accepts only it).
/// The key is a test key, only ever valid against the sandbox.
pub const APP_ID: &str = "wx0123456789abcdef";
pub const MCH_ID: &str = "1900000109";
pub const API_KEY: &str = "sandboxtestkey0123456789abcdefgh";
/// `WATCH_TOKEN_SECRET` of payment-service and the poller (at least 32 characters).
pub const WATCH_TOKEN_SECRET: &str = "e2e-watch-token-secret-0123456789abcdef";

/// [`APP_ID`], [`MCH_ID`] and [`API_KEY`] as the merchant they make.
pub fn merchant() -> Merchant {
    let api_key = match ApiKey::parse(API_KEY) {
        Ok(key) => key,
        Err(reason) => unreachable!("the harness's test key is valid: {reason}"),
    };
    Merchant {
        app_id: APP_ID.to_owned(),
        mch_id: MCH_ID.to_owned(),
        api_key,
    }
}
