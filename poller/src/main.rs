//! The poller binary: telemetry, configuration, and the application until SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use poller::{Application, Config, GrpcQuerier};
use wxpay_store::{postgres::PgOptions, PgStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wxpay_runtime::config::load_dotenv();
    wxpay_runtime::telemetry::init("info");
    let (config, pool) =
        match Config::from_env().and_then(|c| Ok((c, wxpay_runtime::config::database_pool()?))) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        };
    // A database not there yet is waited for (logged, with backoff) rather
    // than exited on: under docker or systemd an exit is a restart loop.
    // Redis needs no wait: the feed reconnects on its own.
    let store = PgStore::connect(
        &config.database_url,
        PgOptions::for_service(pool.max_connections, pool.connect_timeout),
    )
    .await
    .context("cannot open the database")?;
    let querier = GrpcQuerier::with_ca(
        &config.payment_service_url,
        config.fallback_token(),
        config.payment_service_ca.as_deref(),
    )
    .context("PAYMENT_SERVICE_URL")?;
    let app = Application::build_with(config, Arc::new(store), Arc::new(querier)).await?;
    tracing::info!(
        port = app.port(),
        metrics_port = app.metrics_port(),
        "poller listening"
    );
    app.run_until_stopped(wxpay_runtime::shutdown::signal())
        .await
}
