//! The chaos soak (issue 28): the split deployment as real processes, two of
//! each service, under continuous traffic with a known truth while seeded
//! faults kill, cut, slow and restart everything; then everything is healed
//! and the soak waits (bounded) until this deployment's money agrees with
//! WeChat's ledger, and reports the work done, the faults by kind, the time to
//! converge after the last fault, and every violation with its order.
//!
//! Laid out as: `proxy` (the TCP proxy it cuts and balances with), `deploy`
//! (the processes and their wiring), `traffic` (customers, watchers, the
//! truth), `faults` (what breaks when) and `verdict` (the checks). The binary
//! `chaos` and the test `tests/chaos.rs` both call [`run`].

mod deploy;
mod faults;
mod proxy;
mod traffic;
mod verdict;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

pub use proxy::{Cut, Proxy};
pub use verdict::Violation;

use deploy::Deployment;
use faults::FaultLog;
use traffic::{lock, Clients, Truth};

/// What one soak does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// How long traffic and faults run together.
    pub chaos: Duration,
    /// The mean gap between two faults.
    pub fault_every: Duration,
    /// Concurrent customers.
    pub customers: u64,
    /// How long after healing the money may take to agree before what still
    /// disagrees is reported as violations.
    pub settle_bound: Duration,
    /// Print progress lines (stderr) as it runs.
    pub progress: bool,
    /// The soak's own self-check: before the verdict, break the money in
    /// the database in known ways (see [`sabotage`]); the verdict must name
    /// each. Never set for a real run.
    pub sabotage: bool,
}

impl ChaosConfig {
    /// A short run for CI: a minute and a quarter of chaos, a fault every ~5 s.
    pub fn short(seed: u64) -> Self {
        Self {
            seed,
            chaos: Duration::from_secs(75),
            fault_every: Duration::from_secs(5),
            customers: 6,
            settle_bound: Duration::from_secs(240),
            progress: true,
            sabotage: false,
        }
    }
}

/// What a soak did and found.
#[derive(Debug)]
pub struct ChaosReport {
    pub seed: u64,
    pub chaos: Duration,
    pub counters: Vec<(&'static str, u64)>,
    pub faults: Vec<(&'static str, u64)>,
    pub orders_checked: usize,
    pub paid_at_wechat: usize,
    pub refunds_checked: usize,
    pub refunded_fen: i64,
    pub audit_copies_missing: usize,
    /// From the last fault healed to the first clean check; `None`: never
    /// within the bound.
    pub converged_after: Option<Duration>,
    /// From the end of the chaos to the last customer finishing its order.
    pub drained_after: Duration,
    pub violations: Vec<Violation>,
    /// With `sabotage`: the orders broken on purpose and how.
    pub sabotaged: Vec<(String, &'static str)>,
    /// Calls that ended without success, by call, code and message.
    pub refusals: Vec<(String, u64)>,
    /// Where each process's log went.
    pub logs: Vec<(String, Vec<std::path::PathBuf>)>,
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos soak: seed {}, {:?} of chaos",
            self.seed, self.chaos
        )?;
        writeln!(f, "work done:")?;
        for (name, n) in &self.counters {
            writeln!(f, "  {name:<28} {n}")?;
        }
        let total: u64 = self.faults.iter().map(|(_, n)| n).sum();
        writeln!(f, "faults injected: {total}")?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {kind:<28} {n}")?;
        }
        if !self.refusals.is_empty() {
            writeln!(f, "calls that ended without success:")?;
            for (why, n) in &self.refusals {
                writeln!(f, "  {n:>5}  {why}")?;
            }
        }
        writeln!(
            f,
            "checked: {} orders ({} paid at WeChat), {} refunds ({} fen refunded at WeChat)",
            self.orders_checked, self.paid_at_wechat, self.refunds_checked, self.refunded_fen
        )?;
        writeln!(
            f,
            "audit copies missing for acknowledged notifications (allowed by design after a crash): {}",
            self.audit_copies_missing
        )?;
        writeln!(
            f,
            "traffic drained {:.1?} after the chaos ended",
            self.drained_after
        )?;
        match self.converged_after {
            Some(d) => writeln!(f, "converged {:.1?} after the last fault was healed", d)?,
            None => writeln!(f, "did NOT converge within the settle bound")?,
        }
        if self.violations.is_empty() {
            writeln!(f, "violations: none")?;
        } else {
            writeln!(f, "violations: {}", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            writeln!(f, "logs:")?;
            for (name, files) in &self.logs {
                for file in files {
                    writeln!(f, "  {name}: {}", file.display())?;
                }
            }
        }
        Ok(())
    }
}

macro_rules! say {
    ($cfg:expr, $($arg:tt)*) => {
        if $cfg.progress {
            eprintln!("[chaos] {}", format!($($arg)*));
        }
    };
}

/// Runs one soak from start to verdict.
pub async fn run(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let deployment = Arc::new(Deployment::start().await?);
    say!(
        config,
        "deployment up in {:.1?}: sandbox {}, Postgres {} via proxy {}",
        started.elapsed(),
        deployment.sandbox_url,
        deployment.database_url,
        deployment.postgres_proxy.addr()
    );
    let clients = Clients::new(
        &deployment.payments_url(),
        &deployment.pollers_url(),
        &deployment.pollers_ws(),
        &deployment.sandbox_url,
    )?;
    let truth = Arc::new(Truth::default());
    let log = Arc::new(FaultLog::default());
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let stop_faults = Arc::new(AtomicBool::new(false));
    let (stop_watchers, watchers_stopped) = tokio::sync::watch::channel(false);

    let mut customers = tokio::task::JoinSet::new();
    for id in 0..config.customers {
        customers.spawn(traffic::customer(
            id,
            config.seed,
            clients.clone(),
            truth.clone(),
            stop_traffic.clone(),
            watchers_stopped.clone(),
        ));
    }
    let injector = tokio::spawn(faults::inject(
        config.seed,
        config.fault_every,
        deployment.clone(),
        log.clone(),
        stop_faults.clone(),
    ));

    let chaos_started = Instant::now();
    let mut shown = 0;
    while chaos_started.elapsed() < config.chaos {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let events = lock(&log.events).clone();
        for e in &events[shown..] {
            say!(config, "{:>6.1?} fault {e}", chaos_started.elapsed());
        }
        shown = events.len();
        if chaos_started.elapsed().as_secs().is_multiple_of(10) {
            let c = &truth.counters;
            say!(
                config,
                "{:>6.1?} orders {}, paid {}, refunds {}, closes {}, faults {}, retries {}",
                chaos_started.elapsed(),
                c.orders.load(Ordering::Relaxed),
                c.paid.load(Ordering::Relaxed),
                c.refunds.load(Ordering::Relaxed),
                c.closes.load(Ordering::Relaxed),
                log.total(),
                c.retries.load(Ordering::Relaxed)
            );
        }
    }

    // Heal: no new faults, every fault started is undone, WeChat's counters
    // cleared, every process running and ready.
    say!(config, "chaos over; healing");
    stop_faults.store(true, Ordering::SeqCst);
    stop_traffic.store(true, Ordering::SeqCst);
    let chaos_ended = Instant::now();
    let _ = injector.await;
    deployment.postgres_proxy.heal();
    deployment.gateways.heal();
    deployment.postgres_proxy.set_latency(Duration::ZERO);
    let _ = deployment
        .http()
        .post(format!("{}/sandbox/faults", deployment.sandbox_url))
        .json(&serde_json::json!({}))
        .send()
        .await;
    deployment.redis.lock().await.restart_if_down().await?;
    deployment.until_all_ready().await?;
    let healed = (*lock(&log.last_healed)).unwrap_or_else(tokio::time::Instant::now);
    let healed = healed.max(tokio::time::Instant::now());
    say!(config, "healed; waiting for the customers' last orders");
    while customers.join_next().await.is_some() {}
    let drained_after = chaos_ended.elapsed();
    say!(
        config,
        "traffic drained after {drained_after:.1?}; checking"
    );

    let mut sabotaged = Vec::new();
    let mut findings;
    let mut converged_after = None;
    loop {
        findings = verdict::check(
            &deployment.database_url,
            &deployment.sandbox_url,
            deployment.http(),
            &truth,
        )
        .await?;
        let since = healed.elapsed();
        if findings.violations.is_empty() {
            converged_after.get_or_insert(since);
            if config.sabotage && sabotaged.is_empty() {
                // Converged; now break it, and check once more.
                sabotaged = sabotage(&deployment.database_url).await?;
                say!(config, "sabotaged: {sabotaged:?}");
                continue;
            }
            break;
        }
        if !sabotaged.is_empty() {
            break;
        }
        say!(
            config,
            "{since:>6.1?} after healing: {} disagreements (first: {})",
            findings.violations.len(),
            findings.violations[0]
        );
        if since > config.settle_bound {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = stop_watchers.send(true);

    let c = &truth.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counters = vec![
        ("orders created", load(&c.orders)),
        ("  on the v3 merchant", load(&c.v3_orders)),
        ("CreateOrder abandoned", load(&c.create_abandoned)),
        ("payments", load(&c.paid)),
        ("  notified twice at once", load(&c.paid_duplicate)),
        ("  notification dropped", load(&c.paid_dropped)),
        ("  after a failed attempt", load(&c.failed_then_paid)),
        ("failed, never paid", load(&c.failed_only)),
        ("closes", load(&c.closes)),
        ("closes refused", load(&c.closes_refused)),
        ("payer tried after the close", load(&c.pay_after_close)),
        ("  and WeChat took it", load(&c.paid_after_close)),
        ("refunds asked", load(&c.refunds)),
        ("  two at once (pairs)", load(&c.refunds_concurrent)),
        ("  refused", load(&c.refunds_refused)),
        ("  settled SUCCESS by the bank", load(&c.refunds_settled)),
        ("  closed by the bank", load(&c.refunds_closed)),
        (
            "paid, not seen paid in time",
            load(&c.not_paid_here_in_time),
        ),
        ("calls retried", load(&c.retries)),
        ("calls abandoned", load(&c.abandoned_calls)),
        ("WebSocket watchers", load(&c.ws_watchers)),
        ("watch reconnects", load(&c.watch_reconnects)),
    ];
    let faults = lock(&log.by_kind).iter().map(|(k, n)| (*k, *n)).collect();
    let mut logs = vec![(
        "wechat-sandbox".to_owned(),
        vec![deployment.sandbox.log_path().to_owned()],
    )];
    for s in &deployment.services {
        let s = s.lock().await;
        logs.push((s.name.clone(), s.logs.clone()));
    }
    let refusals = lock(&truth.refusals)
        .iter()
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    Ok(ChaosReport {
        seed: config.seed,
        chaos: config.chaos,
        counters,
        faults,
        orders_checked: findings.orders_checked,
        paid_at_wechat: findings.paid_at_wechat,
        refunds_checked: findings.refunds_checked,
        refunded_fen: findings.refunded_fen,
        audit_copies_missing: findings.audit_copies_missing,
        converged_after,
        drained_after,
        violations: findings.violations,
        sabotaged,
        refusals,
        logs,
    })
}

/// Breaks the money in the database the way a bug would, one order each: a
/// paid order's refunded_fee raised by one fen, an unpaid order marked paid
/// with a transaction WeChat never made, a paid order's payment event
/// deleted. Returns the orders and the violation kind each must produce.
async fn sabotage(database_url: &str) -> anyhow::Result<Vec<(String, &'static str)>> {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    let mut broken = Vec::new();
    let paid: Vec<String> = sqlx::query_scalar(
        "SELECT out_trade_no FROM orders WHERE status = 'SUCCESS' AND refunded_fee = 0 \
         ORDER BY out_trade_no LIMIT 2",
    )
    .fetch_all(&mut db)
    .await?;
    anyhow::ensure!(
        paid.len() == 2,
        "sabotage needs two paid orders, found {paid:?}"
    );
    sqlx::query("UPDATE orders SET refunded_fee = 1 WHERE out_trade_no = $1")
        .bind(&paid[0])
        .execute(&mut db)
        .await?;
    broken.push((paid[0].clone(), "refunded_fee differs"));
    sqlx::query("DELETE FROM order_events WHERE out_trade_no = $1 AND status = 'SUCCESS'")
        .bind(&paid[1])
        .execute(&mut db)
        .await?;
    broken.push((paid[1].clone(), "event versions"));
    let unpaid: String = sqlx::query_scalar(
        "SELECT out_trade_no FROM orders WHERE status = 'NOTPAY' ORDER BY out_trade_no LIMIT 1",
    )
    .fetch_one(&mut db)
    .await?;
    sqlx::query(
        "UPDATE orders SET status = 'SUCCESS', transaction_id = '4200009999202612070000000001', \
         paid_at = now() WHERE out_trade_no = $1",
    )
    .bind(&unpaid)
    .execute(&mut db)
    .await?;
    broken.push((unpaid, "paid here, not at WeChat"));
    Ok(broken)
}
