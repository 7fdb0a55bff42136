//! Logging setup shared by every binary: JSON lines when `LOG_FORMAT=json`
//! (production), human-readable otherwise; the level from `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: tests and the embedded binary may call this more than once.
    let _ = if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .with_target(false)
            .try_init()
    } else {
        // Colours only on a terminal: piped or redirected logs stay plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(ansi)
            .try_init()
    };
}
