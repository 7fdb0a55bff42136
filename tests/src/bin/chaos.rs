//! `cargo run --release -p e2e-tests --bin chaos -- --minutes 30 --seed 42`:
//! the chaos soak of issue 28 from the command line (see
//! `e2e_tests::chaos`). Prints progress on stderr and the report on stdout;
//! exits 1 on any violation, 2 when the soak itself could not run.

use std::time::Duration;

use e2e_tests::chaos::{run, ChaosConfig};

const USAGE: &str = "usage: chaos [--minutes N | --seconds N] [--seed N] [--fault-every SECONDS] \
                     [--customers N] [--settle-bound SECONDS]";

fn parse() -> Result<ChaosConfig, String> {
    let mut config = ChaosConfig::short(42);
    config.fault_every = Duration::from_secs(7);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} takes a whole number, not {value:?}\n{USAGE}"))?;
        match flag.as_str() {
            "--minutes" => config.chaos = Duration::from_secs(number * 60),
            "--seconds" => config.chaos = Duration::from_secs(number),
            "--seed" => config.seed = number,
            "--fault-every" => config.fault_every = Duration::from_secs(number.max(1)),
            "--customers" => config.customers = number.max(1),
            "--settle-bound" => config.settle_bound = Duration::from_secs(number),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() {
    let config = match parse() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    eprintln!("[chaos] {config:?}");
    match run(config).await {
        Ok(report) => {
            println!("{report}");
            if !report.violations.is_empty() || report.converged_after.is_none() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("the soak could not run: {e:#}");
            std::process::exit(2);
        }
    }
}
