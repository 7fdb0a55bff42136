//! The gateway binary: configuration, telemetry, and the HTTP server.

use gateway::{Application, GatewayConfig};
use wxpay_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() {
    config::load_dotenv();
    telemetry::init("info");
    let config = match GatewayConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("gateway failed to start: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = app.run_until_stopped(shutdown::signal()).await {
        eprintln!("gateway failed: {e:#}");
        std::process::exit(1);
    }
}
