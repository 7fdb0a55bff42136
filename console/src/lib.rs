//! The operator console: the people who handle the money (finance, support)
//! see orders, their whole history, refunds, anomalies, bill reports and the
//! audit log in a browser, and act on them.
//!
//! - [`config`]: the environment (`CONSOLE_ADDR`, `CONSOLE_USERS_FILE`, …);
//! - [`users`]: the users file, Argon2id passwords, `console add-user`;
//! - [`session`]: the encrypted session cookie, CSRF tokens, who may act, and
//!   the sign-in limiter;
//! - [`actions`]: every change, made only through the PaymentService API and
//!   written to the audit log before and after;
//! - [`pages`]: the server-rendered pages and the live status stream;
//! - [`application`]: the router, `Application::build` and `run_until_stopped`.
//!
//! The console writes only its own tables (the audit log and anomaly
//! resolutions, through [`wxpay_store::console::ConsoleStore`]); an order,
//! refund or bill changes only through payment-service, so every rule the API
//! enforces holds for a person in a browser too.

pub mod actions;
pub mod application;
pub mod config;
pub mod error;
pub mod format;
pub mod pages;
pub mod session;
pub mod users;

pub use application::{Application, Parts};
pub use config::Config;
