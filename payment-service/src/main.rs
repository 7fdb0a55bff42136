//! The payment-service binary: configuration, telemetry, and the gRPC server.

use payment_service::application as server;
use wxpay_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() {
    config::load_dotenv();
    telemetry::init("info");
    let settings = match server::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let app = match server::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("payment-service failed to start: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = app.run_until_stopped(shutdown::signal()).await {
        eprintln!("payment-service failed: {e}");
        std::process::exit(1);
    }
}
