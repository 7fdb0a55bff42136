//! The poller binary: telemetry, configuration, and the application until SIGTERM.

use poller::{Application, Config};
use wxpay_store::postgres::PgOptions;

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
    let app = Application::build_with_database(
        config,
        PgOptions::for_service(pool.max_connections, pool.connect_timeout),
    )
    .await?;
    tracing::info!(
        port = app.port(),
        metrics_port = app.metrics_port(),
        "poller listening"
    );
    app.run_until_stopped(wxpay_runtime::shutdown::signal())
        .await
}
