//! The poller binary: telemetry, configuration, and the application until SIGTERM.

use poller::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wxpay_runtime::config::load_dotenv();
    wxpay_runtime::telemetry::init("info");
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let app = Application::build(config).await?;
    tracing::info!(
        port = app.port(),
        metrics_port = app.metrics_port(),
        "poller listening"
    );
    app.run_until_stopped(wxpay_runtime::shutdown::signal())
        .await
}
