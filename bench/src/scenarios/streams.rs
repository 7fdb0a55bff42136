//! Scenario 2, open streams: 10k, 100k, 500k and 1M idle WatchOrder streams on
//! one poller running as a child process (so its RSS is its own), multiplexed
//! over HTTP/2 connections from this driver (the load generator, a separate
//! process), and the latency of a payment's event while they are open. Levels are
//! reached incrementally on the same poller.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{stream, StreamExt};
use tonic::{codec::Streaming, transport::Channel};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient, OrderStatus, OrderStatusEvent,
    WatchOrderRequest,
};

use crate::{
    measure::{ms, raise_nofile, rss_bytes, summarize},
    report::Section,
    scenarios::delivery::stack_sender,
    stack::{channels, Stack},
    Mode,
};

/// The levels a full run reaches, on one poller, one after another.
const LEVELS: [usize; 4] = [10_000, 100_000, 500_000, 1_000_000];

/// Streams per HTTP/2 connection: under the server's 200 concurrent streams per connection.
const PER_CONNECTION: usize = 150;

/// A free loopback port (bound then released; the child binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The poller program: `poller` beside this executable (target/release/poller,
/// built first when run through cargo), else this executable's `poller-child`
/// subcommand, which runs the same poller library in a process of its own.
fn poller_program(mode: Mode) -> anyhow::Result<(std::path::PathBuf, Vec<String>, String)> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("executable without a directory")?;
    let release = dir.ends_with("release");
    if mode == Mode::Full {
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "-q", "-p", "poller"]);
            if release {
                build.arg("--release");
            }
            let _ = build.status();
        }
    }
    let bin = dir.join("poller");
    if mode == Mode::Full && bin.exists() {
        let shown = format!(
            "target/{}/poller",
            if release { "release" } else { "debug" }
        );
        return Ok((bin, vec![], shown));
    }
    Ok((
        me,
        vec!["poller-child".into()],
        "wxpay-bench poller-child".into(),
    ))
}

pub async fn run(stack: &Stack, mode: Mode, command: &str) -> anyhow::Result<Section> {
    // `--only 100000,1000000 streams` measures those levels instead.
    let chosen = crate::only_numbers();
    let (levels, probes): (&[usize], usize) = match (mode, &chosen) {
        (Mode::Full, Some(levels)) => (levels, 100),
        (Mode::Full, None) => (&LEVELS, 100),
        (Mode::Smoke, _) => (&[100, 300], 3),
    };
    let nofile = raise_nofile();
    let top = *levels.last().unwrap_or(&0);
    let orders = Arc::new(stack.seed(&super::prefix("S"), top).await?);

    let (mut program, mut args, shown) = poller_program(mode)?;
    // Profiling aid: WXPAY_BENCH_POLLER_WRAP="heaptrack -o /tmp/poller" runs the
    // poller under that command, to see where each stream's bytes go (the RSS
    // column is then the wrapper's, not the poller's).
    if let Ok(wrap) = std::env::var("WXPAY_BENCH_POLLER_WRAP") {
        let mut words = wrap.split_whitespace().map(str::to_owned);
        if let Some(first) = words.next() {
            let mut wrapped: Vec<String> = words.collect();
            wrapped.push(program.display().to_string());
            wrapped.extend(args);
            (program, args) = (first.into(), wrapped);
        }
    }
    let (port, metrics_port) = (free_port()?, free_port()?);
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .env("DATABASE_URL", &stack.database_url)
        .env("REDIS_URL", &stack.redis_url)
        .env("POLLER_ADDR", format!("127.0.0.1:{port}"))
        .env("POLLER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env(
            "PAYMENT_SERVICE_URL",
            format!("http://127.0.0.1:{}", stack.payment_port),
        )
        .env("POLLER_FALLBACK_DELAY_MS", "3600000")
        .env("POLLER_FALLBACK_MAX_DELAY_MS", "3600000")
        .env("POLLER_MAX_STREAMS", (top + probes + 1000).to_string())
        .env("POLLER_REDIS_CLIENT_NAME", "wxpay-bench-child")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id().context("the poller exited at once")?;
    let result = measure(
        stack, mode, command, levels, probes, &orders, port, pid, &shown, nofile,
    )
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    stack: &Stack,
    mode: Mode,
    command: &str,
    levels: &[usize],
    probes: usize,
    orders: &Arc<Vec<String>>,
    port: u16,
    pid: u32,
    shown: &str,
    nofile: u64,
) -> anyhow::Result<Section> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the poller child did not listen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_bytes(pid)?;

    let mut section = Section::new(
        "2. Open streams on one poller",
        command,
        &[
            "idle streams",
            "time to open the new ones",
            "opened/s",
            "poller RSS MiB",
            "RSS per stream KiB (net of start)",
            "event p50 ms",
            "event p99 ms",
            "events seen",
        ],
    );
    section.method = format!(
        "The poller runs as a child process (`{shown}`) against the same Postgres and Redis; each stream \
         watches its own unpaid order (one Redis channel each), PER_CONNECTION = {PER_CONNECTION} streams \
         per HTTP/2 connection from the driver. RSS is the child's VmRSS; its RSS before any stream was \
         {:.1} MiB. \"Event\": {probes} more orders, each watched and then paid through the in-process \
         gateway, one at a time: gateway reply → the watcher sees SUCCESS. RLIMIT_NOFILE raised to {nofile}.",
        baseline as f64 / 1048576.0
    );
    let held: Arc<Mutex<Vec<Streaming<OrderStatusEvent>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut opened = 0usize;
    let mut failures = 0usize;
    let mut last_rss = baseline;
    let mut per_stream = 0f64;
    let mut slowest_open = f64::INFINITY;
    let mut worst_p99 = Duration::ZERO;
    let mut all_seen = true;
    for &level in levels {
        let start = Instant::now();
        let range: Vec<usize> = (opened..level).collect();
        let chunks: Vec<Vec<usize>> = range
            .chunks(PER_CONNECTION)
            .map(<[usize]>::to_vec)
            .collect();
        let chans = channels(port, chunks.len()).await?;
        let results: Vec<usize> = stream::iter(chunks.into_iter().zip(chans))
            .map(|(chunk, ch)| open_chunk(ch, chunk, orders.clone(), held.clone()))
            // Enough connections opening at once to keep the poller busy, not so many that opens time out.
            .buffer_unordered(8)
            .collect()
            .await;
        failures += results.iter().sum::<usize>();
        let took = start.elapsed();
        let new = level - opened;
        opened = level;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_bytes(pid)?;
        last_rss = rss;
        let lat = probe(stack, port, probes).await?;
        section.rows.push(vec![
            level.to_string(),
            format!("{:.1} s", took.as_secs_f64()),
            format!("{:.0}", new as f64 / took.as_secs_f64().max(1e-9)),
            format!("{:.0}", rss as f64 / 1048576.0),
            format!(
                "{:.1}",
                rss.saturating_sub(baseline) as f64 / 1024.0 / level as f64
            ),
            ms(lat.p50),
            ms(lat.p99),
            format!("{}/{probes}", lat.n),
        ]);
        per_stream = rss.saturating_sub(baseline) as f64 / level as f64;
        slowest_open = slowest_open.min(new as f64 / took.as_secs_f64().max(1e-9));
        worst_p99 = worst_p99.max(lat.p99);
        all_seen &= lat.n == probes;
    }
    let still_open = held.lock().map(|h| h.len()).unwrap_or(0);
    section.notes.push(format!(
        "{still_open} streams held open at the end; {failures} failed to open."
    ));
    if mode == Mode::Full {
        let top = *levels.last().unwrap_or(&0);
        // Issue 13's budget: a million streams in 4 GiB; a smaller top level gets
        // the same budget per stream.
        let budget = (4u64 << 30) * top as u64 / 1_000_000;
        section.target(
            format!(
                "{top} streams open in ≤ {:.0} MiB poller RSS",
                budget as f64 / 1048576.0
            ),
            format!(
                "{:.0} MiB with {still_open} open",
                last_rss as f64 / 1048576.0
            ),
            still_open >= top && last_rss <= budget,
        );
        section.target(
            "≤ 4 KiB poller RSS per idle stream (net of start, at the top level)",
            format!("{:.2} KiB", per_stream / 1024.0),
            per_stream <= 4096.0,
        );
        section.target(
            "opens ≥ 10,000 streams/s (the slowest level)",
            format!("{slowest_open:.0}/s"),
            slowest_open >= 10_000.0,
        );
        section.target(
            "event p99 ≤ 10 ms with the streams open (the worst level)",
            format!("{} ms, every event seen: {all_seen}", ms(worst_p99)),
            all_seen && worst_p99 <= Duration::from_millis(10),
        );
    }
    Ok(section)
}

/// Opens `chunk`'s streams on one connection, reads each snapshot, keeps the
/// stream open in `held`; returns how many failed.
async fn open_chunk(
    ch: Channel,
    chunk: Vec<usize>,
    orders: Arc<Vec<String>>,
    held: Arc<Mutex<Vec<Streaming<OrderStatusEvent>>>>,
) -> usize {
    let opened: Vec<Option<Streaming<OrderStatusEvent>>> = stream::iter(chunk)
        .map(|i| {
            let mut client = OrderStatusServiceClient::new(ch.clone());
            let no = orders[i].clone();
            async move {
                let mut s = client
                    .watch_order(WatchOrderRequest {
                        out_trade_no: no,
                        timeout_seconds: 1800,
                        include_refunds: false,
                    })
                    .await
                    .ok()?
                    .into_inner();
                s.message().await.ok()??;
                Some(s)
            }
        })
        .buffer_unordered(PER_CONNECTION)
        .collect()
        .await;
    let failed = opened.iter().filter(|s| s.is_none()).count();
    if let Ok(mut h) = held.lock() {
        h.extend(opened.into_iter().flatten());
    }
    failed
}

/// Pays `count` fresh orders one at a time while watching each.
async fn probe(stack: &Stack, port: u16, count: usize) -> anyhow::Result<crate::measure::Summary> {
    let orders = stack.seed(&super::prefix("P"), count).await?;
    let ch = channels(port, 1).await?.remove(0);
    let sender = stack_sender(stack);
    let mut samples = Vec::new();
    for no in orders {
        let mut client = OrderStatusServiceClient::new(ch.clone());
        let mut s = client
            .watch_order(WatchOrderRequest {
                out_trade_no: no.clone(),
                timeout_seconds: 60,
                include_refunds: false,
            })
            .await?
            .into_inner();
        s.message().await?;
        // A payer takes seconds; pausing past the 40 ms delayed-ACK window keeps a
        // Nagle stall on the snapshot's segment out of this figure (see the notes).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = tokio::spawn(async move {
            while let Ok(Some(e)) = s.message().await {
                if e.status == OrderStatus::Success as i32 {
                    return Some(Instant::now());
                }
            }
            None
        });
        let ok = sender.send(&no).await?;
        let replied = Instant::now();
        if let (true, Ok(Ok(Some(at)))) = (
            ok,
            tokio::time::timeout(Duration::from_secs(10), seen).await,
        ) {
            samples.push(at.saturating_duration_since(replied));
        }
    }
    Ok(summarize(samples))
}
