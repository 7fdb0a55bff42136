//! wxpay-runtime: what every binary of the product needs around its own work:
//! configuration readers (one clear line naming a bad variable, secrets never
//! echoed), telemetry, the shutdown signal, and (with the `grpc` feature) the
//! bearer-token check of the gRPC servers and their optional TLS, and (with `http`)
//! the accept loop of the public HTTP listeners. Who may call what is `access`
//! (the scope a request carries) and `callers_file` (`API_CALLERS_FILE`).

pub mod access;
#[cfg(feature = "grpc")]
pub mod auth;
pub mod callers;
pub mod callers_file;
pub mod config;
#[cfg(feature = "http")]
pub mod http_edge;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "grpc")]
pub mod tls;
