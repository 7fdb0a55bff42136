//! The `console` binary: serves the operator console, or with `add-user`
//! appends a user to `CONSOLE_USERS_FILE`.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use console::{
    users::{self, NewUser, Role},
    Application, Config,
};
use wxpay_runtime::{config, shutdown, telemetry};
use wxpay_store::postgres::PgOptions;

const USAGE: &str = "usage:\n  console                                   serve the operator console (CONSOLE_ADDR)\n  \
console add-user NAME --role viewer|operator [--merchants a,b]\n                                            \
add a user to CONSOLE_USERS_FILE; the password is read from stdin,\n                                            \
or generated and printed when stdin is empty";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve().await,
        Some("add-user") => add_user(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    config::load_dotenv();
    telemetry::init("info");
    let (config, pool) = match Config::from_env().and_then(|c| Ok((c, config::database_pool()?))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("console: {}: {}", e.var, e.reason);
            return ExitCode::from(2);
        }
    };
    let options = PgOptions::for_service(pool.max_connections, pool.connect_timeout);
    let app = match Application::build(config, options).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("console failed to start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "console listening");
    match app.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn add_user(args: &[String]) -> ExitCode {
    config::load_dotenv();
    let mut name = None;
    let mut role = None;
    let mut merchants = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--role" => role = it.next().cloned(),
            "--merchants" => {
                merchants = it.next().map(|m| {
                    m.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                })
            }
            other if name.is_none() && !other.starts_with('-') => name = Some(other.to_owned()),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(name), Some(role)) = (name, role) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let role = match Role::parse(&role) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("console add-user: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(path) = std::env::var_os("CONSOLE_USERS_FILE").map(PathBuf::from) else {
        eprintln!("console add-user: CONSOLE_USERS_FILE must name the users file");
        return ExitCode::from(2);
    };
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {name} (at least 12 characters; empty: generate one): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("console add-user: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let typed = line.trim_end_matches(['\r', '\n']).to_owned();
    let (password, generated) = if typed.is_empty() {
        (users::generate_password(), true)
    } else {
        (typed, false)
    };
    let user = NewUser {
        name: name.clone(),
        role,
        merchants,
        password: password.clone(),
    };
    match users::add_user(&path, &user) {
        Ok(()) => {
            if generated {
                println!(
                    "{name} ({}) added to {}; password: {password}",
                    role.as_str(),
                    path.display()
                );
            } else {
                println!("{name} ({}) added to {}", role.as_str(), path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("console add-user: {e}");
            ExitCode::FAILURE
        }
    }
}
