//! The sandbox binary: configuration from the environment, logs (with where the
//! TLS files are), serve until SIGTERM or Ctrl-C. Everything else is in the library.

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
            // A TLS problem's message names its SANDBOX_TLS_ variable itself.
            eprintln!("wechat-sandbox: cannot start (SANDBOX_ADDR {addr}): {e}");
            return ExitCode::FAILURE;
        }
    };
    log_tls(&sandbox);
    match sandbox.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the sandbox stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Where each merchant finds what `/secapi/` needs: the URL, the CA to trust
/// (`WECHAT_EXTRA_ROOT_CA`) and its client certificate, key and p12 (one per
/// hosted account: `client_cert`/`client_key` or `client_p12` in MERCHANTS_FILE).
fn log_tls(sandbox: &Sandbox) {
    let files = sandbox.tls_files();
    let ca = files.ca_path().display();
    let mut issued = false;
    for (mch_id, client) in files.clients() {
        issued = true;
        tracing::info!(
            https_url = %sandbox.https_url(),
            ca = %ca,
            mch_id,
            client_cert = %client.cert_path().display(),
            client_key = %client.key_path().display(),
            client_p12 = %client.p12_path().display(),
            "TLS listener for /secapi/: trust the CA, present the account's client certificate (p12 password: the mch_id)"
        );
    }
    if !issued {
        tracing::info!(
            https_url = %sandbox.https_url(),
            ca = %ca,
            "TLS listener for /secapi/: client certificates must be issued by the given CA with CN = mch_id"
        );
    }
}
