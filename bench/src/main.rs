//! `wxpay-bench`: runs the benchmark scenarios and prints their tables; `all`
//! also writes docs/BENCHMARKS.md (or `--out PATH`). `--smoke` runs every scenario
//! for a few seconds, which CI uses to keep the driver working, never for figures.
//!
//! ```text
//! cargo run --release -p wxpay-bench -- all            # every scenario, writes docs/BENCHMARKS.md
//! cargo run --release -p wxpay-bench -- delivery       # one scenario: delivery|streams|create|notify|micro|console
//! cargo run --release -p wxpay-bench -- --smoke all --out /tmp/b.md
//! target/release/wxpay-bench --only service create  # one path, e.g. under `perf record`
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context};
use wxpay_bench::{machine::Machine, report, scenarios, stack::Stack, Mode};

const SCENARIOS: [&str; 6] = [
    "delivery", "streams", "create", "notify", "micro", "console",
];
/// The order `all` runs them in: the throughput rows first, on a small database
/// (with delivery first, their ceilings measured about half: 4,934 against
/// 7,405 raw INSERTs/s, for a reason not found); the open-streams scenario, which
/// seeds a million orders, then the console's, on a million orders in a database
/// of its own. The document keeps `SCENARIOS`' order.
const RUN_ORDER: [&str; 6] = [
    "create", "notify", "micro", "delivery", "streams", "console",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("poller-child") {
        return poller_child();
    }
    // Many sockets in the open-streams scenario: raise the limit before the runtime starts.
    wxpay_bench::measure::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(drive(args))
}

/// The poller, run in a process of its own when `target/*/poller` is not there.
fn poller_child() -> anyhow::Result<()> {
    let config = poller::Config::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = poller::Application::build(config).await?;
        app.run_until_stopped(wxpay_runtime::shutdown::signal())
            .await
    })
}

async fn drive(args: Vec<String>) -> anyhow::Result<()> {
    let mut mode = Mode::Full;
    let mut out: Option<PathBuf> = None;
    let mut chosen: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => mode = Mode::Smoke,
            "--out" => out = Some(it.next().context("--out needs a path")?.into()),
            // Profiling aid: only these parts of create/notify (service|ceiling,
            // distinct|ceiling|duplicates), or these client counts of delivery (100,1000).
            "--only" => wxpay_bench::set_only(
                it.next()
                    .context("--only needs parts, e.g. service or distinct,duplicates")?
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            ),
            "all" => chosen.extend(RUN_ORDER.iter().map(|s| s.to_string())),
            s if SCENARIOS.contains(&s) => chosen.push(s.to_owned()),
            "-h" | "--help" => {
                println!(
                    "usage: wxpay-bench [--smoke] [--out PATH] [--only PARTS] all|{}",
                    SCENARIOS.join("|")
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if chosen.is_empty() {
        bail!("name a scenario or `all`: {}", SCENARIOS.join(", "));
    }
    let whole = chosen.len() == SCENARIOS.len();
    // Only a complete run replaces the document, unless told where to write.
    if out.is_none() && whole && mode == Mode::Full {
        out = Some(workspace_root().join("docs/BENCHMARKS.md"));
    }
    let smoke = if mode == Mode::Smoke { " --smoke" } else { "" };
    let command_for = |s: &str| format!("cargo run --release -p wxpay-bench --{smoke} {s}");

    let stack = Stack::start().await?;
    let machine = Machine::describe(&stack.pool, &stack.redis_url).await;
    println!("{}", machine.markdown());
    let mut sections = Vec::new();
    for name in &chosen {
        let command = command_for(name);
        eprintln!("== {name} ==");
        // Each scenario starts without the previous one's dirty buffers (a spread
        // checkpoint overlapped the rows that stalled in two runs; see
        // bench/ANALYSIS.md, which says why that is not the whole story).
        // Superuser only; without it the run goes on.
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&stack.pool).await {
            eprintln!("CHECKPOINT before {name} failed (the run goes on): {e}");
        }
        let section = match name.as_str() {
            "delivery" => scenarios::delivery::run(&stack, mode, &command).await,
            "streams" => scenarios::streams::run(&stack, mode, &command).await,
            "create" => scenarios::create::run(&stack, mode, &command).await,
            "notify" => scenarios::notify::run(&stack, mode, &command).await,
            "micro" => scenarios::micro::run(mode, &command),
            "console" => scenarios::console::run(&machine, mode, &command).await,
            _ => unreachable!("names are checked above"),
        }
        .with_context(|| format!("scenario {name}"))?;
        println!("{}", section.markdown());
        sections.push((name.clone(), section));
    }
    stack.stop().await;
    sections.sort_by_key(|(name, _)| SCENARIOS.iter().position(|s| s == name));
    let sections: Vec<_> = sections.into_iter().map(|(_, s)| s).collect();

    if let Some(path) = out {
        let command = if whole {
            command_for("all")
        } else {
            command_for(&chosen.join(" "))
        };
        let epilogue =
            std::fs::read_to_string(workspace_root().join("bench/ANALYSIS.md")).unwrap_or_default();
        let doc = report::document(&machine, &command, &sections, &epilogue);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The workspace root: bench/'s parent.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
