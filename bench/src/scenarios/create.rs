//! Scenario 3, CreateOrder: orders per second and latency through payment-service
//! (gRPC, store, the sandbox's unifiedorder over loopback HTTP, signing), against
//! the ceiling measured in the same run: the same row inserted through sqlx at the
//! same concurrency, with no service in between.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use wxpay_proto::v1::{payment_service_client::PaymentServiceClient, CreateOrderRequest};

use crate::{
    counting::Tally,
    measure::{ms, summarize, CpuSnapshot, CpuUse, Summary},
    report::Section,
    runs,
    stack::{channels, Stack},
    Mode,
};

/// One measured path: rate, latency, errors and, for a service path, the store
/// calls it made per completed operation and the time spent inside them.
#[derive(Default)]
pub struct Rate {
    pub per_s: f64,
    pub latency: Summary,
    pub errors: u64,
    /// Store calls per completed op and mean time inside them (None: raw SQL, one statement).
    pub store: Option<(f64, Duration)>,
    /// CPU over the window: this process, Postgres, Redis, everything else.
    pub cpu: CpuUse,
    pub measured: bool,
}

impl Rate {
    /// The row's cells after the path's name: per second, p50, p99, mean, store calls/op, ms in store/op, errors.
    pub fn cells(&self) -> Vec<String> {
        if !self.measured {
            return vec![
                "not run (--only)".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ];
        }
        let (calls, inside) = match self.store {
            Some((c, t)) => (format!("{c:.2}"), ms(t)),
            None => ("1 (by construction)".into(), ms(self.latency.mean)),
        };
        vec![
            format!("{:.0}", self.per_s),
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.mean),
            calls,
            inside,
            self.errors.to_string(),
            format!(
                "{:.0}/{:.0}/{:.0}",
                self.cpu.bench, self.cpu.postgres, self.cpu.others
            ),
        ]
    }
}

/// The columns [`Rate::cells`] fills, after the path's name.
pub const RATE_COLUMNS: [&str; 8] = [
    "per second",
    "p50 ms",
    "p99 ms",
    "mean ms",
    "store calls / op",
    "ms inside store calls / op (mean)",
    "errors",
    "CPU % (bench/pg/other processes)",
];

/// [`drive`], reading a service's store tally before and after the window.
pub async fn measure<F, Fut>(
    tally: Option<&Tally>,
    concurrency: usize,
    window: Duration,
    op: F,
) -> Rate
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let before = tally.map(Tally::read);
    // A marker for a profiler started from outside (see bench/ANALYSIS.md).
    eprintln!("-- measuring for {:.0} s", window.as_secs_f64());
    let cpu0 = CpuSnapshot::take();
    let (per_s, latency, errors) = drive(concurrency, window, op).await;
    let cpu = CpuSnapshot::take().since(&cpu0);
    let store = tally.zip(before).map(|(t, (c0, d0))| {
        let (c1, d1) = t.read();
        let ops = latency.n.max(1) as f64;
        ((c1 - c0) as f64 / ops, (d1.saturating_sub(d0)).div_f64(ops))
    });
    Rate {
        per_s,
        latency,
        errors,
        store,
        cpu,
        measured: true,
    }
}

/// Runs `op(i)` from `concurrency` workers for `window`; counts successes and their latencies.
pub async fn drive<F, Fut>(concurrency: usize, window: Duration, op: F) -> (f64, Summary, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + window;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, next, errors) = (op.clone(), next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match op(i).await {
                    Ok(true) => lat.push(t.elapsed()),
                    // `false`: nothing left to do (the seeded set ran out).
                    Ok(false) => break,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        if let Ok(l) = w.await {
            all.extend(l);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (
        all.len() as f64 / secs,
        summarize(all),
        errors.load(Ordering::Relaxed),
    )
}

pub async fn run(stack: &Stack, mode: Mode, command: &str) -> anyhow::Result<Section> {
    let (concurrency, window) = match mode {
        Mode::Full => (16, Duration::from_secs(5)),
        Mode::Smoke => (4, Duration::from_secs(1)),
    };
    let tag = super::prefix("C");

    let chans = channels(stack.payment_port, 2).await?;
    let service = if !runs("service") {
        Rate::default()
    } else {
        let tag = tag.clone();
        measure(
            Some(&stack.counters.payment),
            concurrency,
            window,
            move |i| {
                let mut client = PaymentServiceClient::new(chans[(i % 2) as usize].clone());
                let key = format!("{tag}-svc-{i}");
                async move {
                    client
                        .create_order(CreateOrderRequest {
                            idempotency_key: key,
                            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                            description: "bench".into(),
                            total_fee: 1,
                            attach: String::new(),
                            client_ip: "127.0.0.1".into(),
                            expire_seconds: 0,
                            ..Default::default()
                        })
                        .await?;
                    Ok(true)
                }
            },
        )
        .await
    };

    let ceiling = if !runs("ceiling") {
        Rate::default()
    } else {
        let pool = stack.pool.clone();
        let tag = tag.clone();
        measure(None, concurrency, window, move |i| {
            let pool = pool.clone();
            let no = format!("{tag}R{i}");
            let key = format!("{tag}-raw-{i}");
            async move {
                // The statement PgStore::insert_order runs, with the same conflict
                // target (keys are unique per caller since migration 0005) and the
                // same RETURNING (every order column, placement included).
                sqlx::query(
                    "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
                     attach, client_ip, sign_type, expires_at, caller, merchant, trade_type, sub_openid, \
                     product_id, scene_info) \
                     VALUES ($1, $2, 'NOTPAY', $3, $4, $5, $6, $7, $8, $9, 'default', 'default', 'JSAPI', '', \
                     NULL, NULL) \
                     ON CONFLICT (caller, idempotency_key) DO NOTHING RETURNING out_trade_no, idempotency_key, \
                     status, version, openid, description, total_fee, attach, client_ip, sign_type, expires_at, \
                     prepay_id, prepay_expires_at, transaction_id, cash_fee, created_at, updated_at, paid_at, \
                     refunded_fee, merchant, trade_type, sub_openid, product_id, scene_info, pay_url",
                )
                .bind(no)
                .bind(key)
                .bind("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
                .bind("bench")
                .bind(1i64)
                .bind("")
                .bind("127.0.0.1")
                .bind("MD5")
                .bind(None::<chrono::DateTime<chrono::Utc>>)
                .fetch_optional(&pool)
                .await?;
                Ok(true)
            }
        })
        .await
    };

    let header: Vec<&str> = std::iter::once("path").chain(RATE_COLUMNS).collect();
    let mut section = Section::new("3. CreateOrder", command, &header);
    section.method = format!(
        "{concurrency} concurrent callers for {}s each. The service path is gRPC CreateOrder → insert → \
         unifiedorder at the in-process WeChat sandbox (HTTP/XML, signed both ways) → store the prepay_id → \
         sign the wx.requestPayment parameters. The ceiling is the same INSERT … RETURNING through sqlx \
         at the same concurrency, no service. \"store calls / op\" and the time inside them come from \
         payment-service's counting store wrapper (wall-clock per call, pool wait included); the rest of \
         a call's mean is outside the database: gRPC, the unifiedorder round trip to the sandbox, signing, \
         scheduling. CPU: this process, Postgres and every other process on the machine (from \
         /proc/stat), in % of one core over the window; a large last figure means the run was disturbed.",
        window.as_secs()
    );
    for (name, r) in [
        ("CreateOrder via payment-service + sandbox", &service),
        ("ceiling: raw INSERT via sqlx", &ceiling),
    ] {
        let mut row = vec![name.to_string()];
        row.extend(r.cells());
        section.rows.push(row);
    }
    if service.measured && ceiling.measured {
        let ratio = service.per_s / ceiling.per_s.max(1e-9);
        section.target(
            "CreateOrder ≥ 0.5× the raw INSERT",
            format!("{ratio:.2}×"),
            ratio >= 0.5 && service.errors == 0,
        );
    }
    Ok(section)
}
