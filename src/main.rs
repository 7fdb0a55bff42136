//! The `wxpay` binary (`cargo run` at the workspace root): the whole product in
//! one process, or with `demo`, one narrated payment on a private stack.

use std::process::ExitCode;

use wxpay::{banner, demo, Settings, Stack};
use wxpay_runtime::{config, shutdown, telemetry};

const USAGE: &str = "usage: wxpay [demo]\n\
  (no argument)  run payment-service, gateway, poller and the WeChat Pay sandbox in one process\n\
  demo           start a private stack, pay one order through it and show each step";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve().await,
        ["demo"] => run_demo().await,
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    config::load_dotenv();
    telemetry::init("info");
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A v3 merchant beside the configured (v2) one, so a v3 order runs offline too.
    let v3_demo = match wxpay::stack::V3Demo::issue().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("wxpay failed to start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let parts = wxpay::stack::Parts {
        v3_demo: Some(v3_demo),
        ..Default::default()
    };
    let stack = match Stack::start_with(settings, parts).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("wxpay failed to start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", banner::render(&stack));
    match stack.run_until(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxpay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_demo() -> ExitCode {
    // The narration is the output; service logs only when something is wrong.
    telemetry::init("warn");
    let mut stdout = std::io::stdout();
    let outcome = tokio::select! {
        outcome = demo::run(&mut stdout) => outcome,
        _ = shutdown::signal() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
