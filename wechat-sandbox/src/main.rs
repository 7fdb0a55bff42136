//! The sandbox binary: configuration from the environment, logs, serve until
//! SIGTERM or Ctrl-C. Everything else is in the library.

use std::process::ExitCode;

use wechat_sandbox::{Sandbox, SandboxConfig};
use wxpay_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    config::load_dotenv();
    telemetry::init("info");
    let (config, addr) = match SandboxConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let sandbox = match Sandbox::build(config, addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wechat-sandbox: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match sandbox.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the sandbox stopped with an error");
            ExitCode::FAILURE
        }
    }
}
