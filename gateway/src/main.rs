//! The gateway binary: configuration, telemetry, and the HTTP server.

use gateway::{Application, GatewayConfig};
use wxpay_runtime::{config, shutdown, telemetry};
use wxpay_store::postgres::PgOptions;

#[tokio::main]
async fn main() {
    config::load_dotenv();
    telemetry::init("info");
    let (config, pool) =
        match GatewayConfig::from_env().and_then(|c| Ok((c, config::database_pool()?))) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        };
    // A database not there yet is waited for (logged, with backoff) rather
    // than exited on: under docker or systemd an exit is a restart loop.
    let database = PgOptions::for_service(pool.max_connections, pool.connect_timeout);
    let app = match Application::build_with_database(config, database).await {
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
