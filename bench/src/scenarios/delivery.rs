//! Scenario 1, status delivery: N clients wait for their orders to be paid while
//! notifications arrive at a fixed rate. The old way (GetOrder once a second until
//! SUCCESS) and WatchOrder are run one after the other on the same stack, same N,
//! same rate. Latency is from the gateway's reply to the notification to the
//! client seeing SUCCESS; database load is measured in a quiet window while every
//! client waits, before the first payment.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use tokio::time::MissedTickBehavior;
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, GetOrderRequest, OrderStatus, WatchOrderRequest,
};

use crate::{
    measure::{ms, summarize, CpuSnapshot, CpuUse},
    report::Section,
    stack::{channels, CommitCounter, Stack},
    Mode,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Timer,
    Watch,
}

struct Outcome {
    latency: crate::measure::Summary,
    from_post: crate::measure::Summary,
    before_reply: usize,
    calls_per_s: f64,
    commits_per_s: f64,
    wait_cpu: CpuUse,
    pay_cpu: CpuUse,
}

struct Load {
    calls_per_s: f64,
    commits_per_s: f64,
    cpu: CpuUse,
}

/// Database calls, commits and CPU over `window`.
async fn load_over(
    stack: &Stack,
    commits: &mut CommitCounter,
    window: Duration,
) -> anyhow::Result<Load> {
    let (c0, k0, cpu0, t0) = (
        stack.counters.total(),
        commits.read().await?,
        CpuSnapshot::take(),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (c1, k1, cpu1) = (
        stack.counters.total(),
        commits.read().await?,
        CpuSnapshot::take(),
    );
    let secs = t0.elapsed().as_secs_f64();
    Ok(Load {
        calls_per_s: (c1 - c0) as f64 / secs,
        commits_per_s: (k1 - k0) as f64 / secs,
        cpu: cpu1.since(&cpu0),
    })
}

pub async fn run(stack: &Stack, mode: Mode, command: &str) -> anyhow::Result<Section> {
    let (sizes, pay_window, wait_window): (&[usize], _, _) = match mode {
        Mode::Full => (
            &[100, 1_000, 10_000],
            Duration::from_secs(5),
            Duration::from_secs(3),
        ),
        Mode::Smoke => (&[20], Duration::from_secs(1), Duration::from_millis(500)),
    };
    let mut section = Section::new(
        "1. Status delivery: GetOrder once a second vs WatchOrder",
        command,
        &[
            "clients",
            "way",
            "p50 ms",
            "p99 ms",
            "max ms",
            "seen",
            "p50 / p99 ms from the POST",
            "db calls/s waiting",
            "per client/s (net of idle)",
            "xact_commit/s waiting",
            "CPU % waiting (bench/pg/redis)",
            "CPU % paying (bench/pg/redis)",
        ],
    );
    section.method = format!(
        "N clients each wait for their own order; after every client is waiting, the orders are paid \
         by signed notifications POSTed to the gateway at N/{}s per second. Latency: gateway's reply \
         to the notification → the client sees SUCCESS (and, beside it, from the start of the POST, which \
         includes the gateway's own work). \"db calls\" are the services' store calls \
         counted in-process (exact); xact_commit is Postgres' own counter for the benchmark database \
         (flushed by backends about once a second, so approximate). Both are measured over {:.1}s while \
         all clients wait and before any payment; \"net of idle\" subtracts the idle stack's background \
         (the outbox relays poll twice a second). All services run in this process, so CPU is this \
         process (services + clients + notification sender) beside Postgres and Redis, in % of one core.",
        pay_window.as_secs(),
        wait_window.as_secs_f64()
    );
    let mut commits = CommitCounter::connect(&stack.database_name).await?;
    let idle = load_over(stack, &mut commits, wait_window).await?;
    section.notes.push(format!(
        "Idle stack (no client): {:.1} db calls/s, {:.1} commits/s.",
        idle.calls_per_s, idle.commits_per_s
    ));

    let mut results = Vec::new();
    for &n in sizes {
        for way in [Way::Timer, Way::Watch] {
            let o = one(stack, &mut commits, n, way, pay_window, wait_window).await?;
            let per_client = ((o.calls_per_s - idle.calls_per_s) / n as f64).max(0.0);
            section.rows.push(vec![
                n.to_string(),
                match way {
                    Way::Timer => "GetOrder every 1 s".into(),
                    Way::Watch => "WatchOrder".into(),
                },
                ms(o.latency.p50),
                ms(o.latency.p99),
                ms(o.latency.max),
                format!("{}/{}", o.latency.n, n),
                format!("{} / {}", ms(o.from_post.p50), ms(o.from_post.p99)),
                format!("{:.1}", o.calls_per_s),
                format!("{per_client:.4}"),
                format!("{:.1}", o.commits_per_s),
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    o.wait_cpu.bench, o.wait_cpu.postgres, o.wait_cpu.redis
                ),
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    o.pay_cpu.bench, o.pay_cpu.postgres, o.pay_cpu.redis
                ),
            ]);
            if way == Way::Watch && o.before_reply > 0 {
                section.notes.push(format!(
                    "{n} WatchOrder clients: {} saw SUCCESS before the gateway's reply reached the sender \
                     (the publish runs beside the reply); counted as 0 ms.",
                    o.before_reply
                ));
            }
            results.push((n, way, o, per_client));
        }
    }
    for &n in sizes {
        let find = |w| results.iter().find(|r| r.0 == n && r.1 == w);
        let (Some(t), Some(w)) = (find(Way::Timer), find(Way::Watch)) else {
            continue;
        };
        let (wl, tl) = (&w.2.latency, &t.2.latency);
        section.target(
            format!("{n} clients: WatchOrder p50 ≤ 2 ms"),
            format!("{} ms", ms(wl.p50)),
            wl.n == n && wl.p50 <= Duration::from_millis(2),
        );
        section.target(
            format!("{n} clients: WatchOrder p99 ≤ 10 ms"),
            format!("{} ms", ms(wl.p99)),
            wl.n == n && wl.p99 <= Duration::from_millis(10),
        );
        let ratio = tl.p50.as_secs_f64() / wl.p50.as_secs_f64().max(1e-6);
        section.target(
            format!("{n} clients: WatchOrder p50 ≥ 100× below the timer's"),
            format!("{ratio:.0}× ({} vs {} ms)", ms(wl.p50), ms(tl.p50)),
            ratio >= 100.0,
        );
        section.target(
            format!("{n} clients: db queries per watcher per second ≤ 0.001 (timer: 1)"),
            format!("{:.4} (timer {:.3})", w.3, t.3),
            w.3 <= 0.001,
        );
    }
    Ok(section)
}

async fn one(
    stack: &Stack,
    commits: &mut CommitCounter,
    n: usize,
    way: Way,
    pay_window: Duration,
    wait_window: Duration,
) -> anyhow::Result<Outcome> {
    let orders = Arc::new(stack.seed(&super::prefix("D"), n).await?);
    let seen: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let replied: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let posted: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let give_up = Instant::now() + pay_window + wait_window + Duration::from_secs(60);
    let mut clients = Vec::with_capacity(n);
    match way {
        Way::Timer => {
            // A few HTTP/2 connections, as a backend's gRPC client pool would hold.
            let chans = channels(stack.payment_port, 8).await?;
            for i in 0..n {
                let mut client = PaymentServiceClient::new(chans[i % chans.len()].clone());
                let (orders, seen, ready) = (orders.clone(), seen.clone(), ready.clone());
                // Spread the clients' phases over the second, as real clients would be.
                let phase = Duration::from_micros((i as u64 * 1_000_000) / n as u64);
                clients.push(tokio::spawn(async move {
                    tokio::time::sleep(phase).await;
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    let mut first = true;
                    while Instant::now() < give_up {
                        tick.tick().await;
                        let reply = client
                            .get_order(GetOrderRequest {
                                out_trade_no: orders[i].clone(),
                            })
                            .await;
                        if first {
                            first = false;
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Ok(order) = reply {
                            if order.get_ref().status == OrderStatus::Success as i32 {
                                let _ = seen[i].set(Instant::now());
                                return;
                            }
                        }
                    }
                }));
            }
        }
        Way::Watch => {
            // Up to 100 streams per connection (the server allows 200).
            let chans = channels(stack.poller_port, n.div_ceil(100)).await?;
            for i in 0..n {
                let mut client = OrderStatusServiceClient::new(chans[i / 100].clone());
                let (orders, seen, ready) = (orders.clone(), seen.clone(), ready.clone());
                clients.push(tokio::spawn(async move {
                    let stream = client
                        .watch_order(WatchOrderRequest {
                            out_trade_no: orders[i].clone(),
                            timeout_seconds: 600,
                        })
                        .await;
                    let Ok(stream) = stream else {
                        ready.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let mut stream = stream.into_inner();
                    let mut first = true;
                    while let Ok(Some(event)) = stream.message().await {
                        if first {
                            first = false;
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        if event.status == OrderStatus::Success as i32 {
                            let _ = seen[i].set(Instant::now());
                            return;
                        }
                    }
                }));
            }
        }
    }
    while ready.load(Ordering::Relaxed) < n && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = load_over(stack, commits, wait_window).await?;

    // Pay at a fixed rate, each notification on its own task so a slow reply does not delay the schedule.
    let cpu0 = CpuSnapshot::take();
    let start = tokio::time::Instant::now();
    let step = pay_window.as_secs_f64() / n as f64;
    let sender = Arc::new(stack_sender(stack));
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(step * i as f64)).await;
        let (sender, orders, replied, posted) = (
            sender.clone(),
            orders.clone(),
            replied.clone(),
            posted.clone(),
        );
        posts.push(tokio::spawn(async move {
            let _ = posted[i].set(Instant::now());
            if let Ok(true) = sender.send(&orders[i]).await {
                let _ = replied[i].set(Instant::now());
            }
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    for c in clients {
        let _ = tokio::time::timeout_at(give_up.into(), c).await;
    }
    let pay_cpu = CpuSnapshot::take().since(&cpu0);

    let mut before_reply = 0;
    let latencies = (0..n)
        .filter_map(|i| {
            let (s, r) = (seen[i].get()?, replied[i].get()?);
            if s < r {
                before_reply += 1;
            }
            Some(s.saturating_duration_since(*r))
        })
        .collect();
    let from_post = (0..n)
        .filter_map(|i| Some(seen[i].get()?.saturating_duration_since(*posted[i].get()?)))
        .collect();
    Ok(Outcome {
        latency: summarize(latencies),
        from_post: summarize(from_post),
        before_reply,
        calls_per_s: waiting.calls_per_s,
        commits_per_s: waiting.commits_per_s,
        wait_cpu: waiting.cpu,
        pay_cpu,
    })
}

/// What the notification-sending tasks need from the stack, cheap to share.
pub struct Sender {
    http: reqwest::Client,
    url: String,
    merchant: payment_service::wechat::Merchant,
}

pub fn stack_sender(stack: &Stack) -> Sender {
    Sender {
        http: stack.http.clone(),
        url: stack.notify_url(),
        merchant: stack.merchant.clone(),
    }
}

impl Sender {
    /// POSTs a paid notification; true when the gateway answered SUCCESS.
    pub async fn send(&self, out_trade_no: &str) -> anyhow::Result<bool> {
        let body = crate::notification::paid_xml(&self.merchant, out_trade_no, 1)?;
        self.send_body(body).await
    }

    pub async fn send_body(&self, body: String) -> anyhow::Result<bool> {
        let reply = self
            .http
            .post(&self.url)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await?
            .text()
            .await?;
        Ok(reply.contains("<return_code><![CDATA[SUCCESS]]>"))
    }
}
