//! Scenario 1, status delivery: N clients wait for their orders to be paid while
//! notifications arrive at a fixed rate. The old way (GetOrder once a second until
//! SUCCESS) and WatchOrder are run one after the other on the same stack, same N,
//! same rate. The rate is N/5 s, capped below what the gateway sustains beside the
//! clients' own load (so at 10,000 clients the paying window stretches), and the
//! run waits until every paid order was seen (or a drain limit passes). Latency is
//! from the start of the notification's POST to the client seeing SUCCESS (and,
//! beside it, from the gateway's reply); database load is measured in a quiet
//! window while every client waits, before the first payment.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
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
    /// Start of the POST → the client sees SUCCESS (the primary figure).
    from_post: crate::measure::Summary,
    /// The gateway's reply → the client sees SUCCESS (0 when the event came first).
    from_reply: crate::measure::Summary,
    before_reply: usize,
    /// Notifications the gateway acknowledged with SUCCESS.
    paid: usize,
    /// Clients that saw SUCCESS, whether or not their notification's reply came back.
    seen: usize,
    rate: f64,
    pay_secs: f64,
    /// The gateway's store calls per notification while paying, and the mean time inside them.
    gateway_store: (f64, Duration),
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
    let plan = Plan {
        pay_window,
        wait_window,
        max_rate: MAX_RATE,
        drain: match mode {
            Mode::Full => Duration::from_secs(30),
            Mode::Smoke => Duration::from_secs(5),
        },
    };
    let mut section = Section::new(
        "1. Status delivery: GetOrder once a second vs WatchOrder",
        command,
        &[
            "clients",
            "way",
            "paid/s (over s)",
            "paid (gateway acked)",
            "seen SUCCESS",
            "p50 ms from the POST",
            "p99 ms from the POST",
            "max ms from the POST",
            "p50 / p99 ms from the gateway's reply",
            "gateway store calls / ms inside them, per notification",
            "db calls/s waiting",
            "per client/s (net of idle)",
            "xact_commit/s waiting",
            "CPU % waiting (bench/pg/redis/others)",
            "CPU % paying (bench/pg/redis/others)",
        ],
    );
    section.method = format!(
        "N clients each wait for their own order; after every client is waiting, the orders are paid \
         by signed notifications POSTed to the gateway at N/{}s per second, capped at {:.0}/s (below \
         what the gateway sustains beside 10,000 polling clients on 2 cores; uncapped, 10,000 orders in \
         5 s overloaded it), so larger N pay over a longer window; the run then waits until every paid \
         order was seen, at most {:.0} s more. \"seen\" counts the clients that saw SUCCESS; \"paid\" the \
         notifications the gateway acknowledged. Latency, the primary figure: start of the notification's \
         POST → the client sees SUCCESS (it includes the gateway's parse, verify and transaction). \
         Beside it, from the gateway's reply: the event often arrives first because the publish runs \
         beside the reply, and such a client counts 0 ms. Targets are judged on the figure from the POST \
         and need every client to have seen SUCCESS. The gateway's store calls per notification, and the \
         mean wall-clock time inside them, come from its counting store wrapper while paying: most of \
         the time from the POST is the gateway's own database work before the commit. \"db calls\" are the services' store calls \
         counted in-process (exact); xact_commit is Postgres' own counter for the benchmark database \
         (flushed by backends about once a second, so approximate). Both are measured over {:.1}s while \
         all clients wait and before any payment; \"net of idle\" subtracts the idle stack's background \
         (the outbox relays poll twice a second). All services run in this process, so CPU is this \
         process (services + clients + notification sender) beside Postgres, Redis and every other process \
         on the machine (from /proc/stat; large \"others\" means the run was disturbed), in % of one core.",
        pay_window.as_secs(),
        plan.max_rate,
        plan.drain.as_secs_f64(),
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
            let o = one(stack, &mut commits, n, way, &plan).await?;
            let per_client = ((o.calls_per_s - idle.calls_per_s) / n as f64).max(0.0);
            section.rows.push(vec![
                n.to_string(),
                match way {
                    Way::Timer => "GetOrder every 1 s".into(),
                    Way::Watch => "WatchOrder".into(),
                },
                format!("{:.0} ({:.1} s)", o.rate, o.pay_secs),
                format!("{}/{}", o.paid, n),
                format!("{}/{}", o.seen, n),
                ms(o.from_post.p50),
                ms(o.from_post.p99),
                ms(o.from_post.max),
                format!("{} / {}", ms(o.from_reply.p50), ms(o.from_reply.p99)),
                format!("{:.2} / {}", o.gateway_store.0, ms(o.gateway_store.1)),
                format!("{:.1}", o.calls_per_s),
                format!("{per_client:.4}"),
                format!("{:.1}", o.commits_per_s),
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0}",
                    o.wait_cpu.bench, o.wait_cpu.postgres, o.wait_cpu.redis, o.wait_cpu.others
                ),
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0}",
                    o.pay_cpu.bench, o.pay_cpu.postgres, o.pay_cpu.redis, o.pay_cpu.others
                ),
            ]);
            if way == Way::Watch && o.before_reply > 0 {
                section.notes.push(format!(
                    "{n} WatchOrder clients: {} saw SUCCESS before the gateway's reply reached the sender \
                     (the publish runs beside the reply); counted as 0 ms from the reply.",
                    o.before_reply
                ));
            }
            if o.seen < n || o.paid < n {
                section.notes.push(format!(
                    "{n} clients, {}: {} of {n} notifications acknowledged, {} of {n} clients saw SUCCESS \
                     within the drain limit; the latency figures cover only those seen.",
                    if way == Way::Timer { "GetOrder" } else { "WatchOrder" },
                    o.paid,
                    o.seen
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
        let (wl, tl) = (&w.2.from_post, &t.2.from_post);
        let (w_all, t_all) = (w.2.seen == n, t.2.seen == n);
        let seen_note = |all: bool, o: &Outcome| {
            if all {
                String::new()
            } else {
                format!(", only {}/{n} seen", o.seen)
            }
        };
        section.target(
            format!("{n} clients: WatchOrder p50 ≤ 2 ms (from the POST)"),
            format!(
                "{} ms (from the reply {} ms){}",
                ms(wl.p50),
                ms(w.2.from_reply.p50),
                seen_note(w_all, &w.2)
            ),
            w_all && wl.p50 <= Duration::from_millis(2),
        );
        section.target(
            format!("{n} clients: WatchOrder p99 ≤ 10 ms (from the POST)"),
            format!(
                "{} ms (from the reply {} ms){}",
                ms(wl.p99),
                ms(w.2.from_reply.p99),
                seen_note(w_all, &w.2)
            ),
            w_all && wl.p99 <= Duration::from_millis(10),
        );
        let ratio = tl.p50.as_secs_f64() / wl.p50.as_secs_f64().max(1e-6);
        section.target(
            format!("{n} clients: WatchOrder p50 ≥ 100× below the timer's (from the POST)"),
            format!(
                "{ratio:.0}× ({} vs {} ms){}",
                ms(wl.p50),
                ms(tl.p50),
                seen_note(w_all && t_all, if w_all { &t.2 } else { &w.2 })
            ),
            w_all && t_all && ratio >= 100.0,
        );
        section.target(
            format!("{n} clients: db queries per watcher per second ≤ 0.001 (timer: 1)"),
            format!("{:.4} (timer {:.3})", w.3, t.3),
            w.3 <= 0.001,
        );
    }
    Ok(section)
}

/// Notifications per second at most: below the gateway's measured capacity beside
/// 10,000 polling clients on 2 cores (table 4 measures it alone at several hundred/s).
const MAX_RATE: f64 = 300.0;

/// How one delivery run pays and waits.
struct Plan {
    /// N orders are paid over this window, unless that asks more than `max_rate`.
    pay_window: Duration,
    /// The quiet window over which the waiting load is measured.
    wait_window: Duration,
    max_rate: f64,
    /// After the last reply, how long to wait for clients still to see SUCCESS.
    drain: Duration,
}

async fn one(
    stack: &Stack,
    commits: &mut CommitCounter,
    n: usize,
    way: Way,
    plan: &Plan,
) -> anyhow::Result<Outcome> {
    let rate = (n as f64 / plan.pay_window.as_secs_f64()).min(plan.max_rate);
    let orders = Arc::new(stack.seed(&super::prefix("D"), n).await?);
    let seen: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let replied: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let posted: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A hard limit for getting every client ready; the drain below ends the clients.
    let ready_by = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::with_capacity(n);
    match way {
        Way::Timer => {
            // A few HTTP/2 connections, as a backend's gRPC client pool would hold.
            let chans = channels(stack.payment_port, 8).await?;
            for i in 0..n {
                let mut client = PaymentServiceClient::new(chans[i % chans.len()].clone());
                let (orders, seen, ready, stop) =
                    (orders.clone(), seen.clone(), ready.clone(), stop.clone());
                // Spread the clients' phases over the second, as real clients would be.
                let phase = Duration::from_micros((i as u64 * 1_000_000) / n as u64);
                clients.push(tokio::spawn(async move {
                    tokio::time::sleep(phase).await;
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    let mut first = true;
                    while !stop.load(Ordering::Relaxed) {
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
    while ready.load(Ordering::Relaxed) < n && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = load_over(stack, commits, plan.wait_window).await?;

    // Pay at a fixed rate, each notification on its own task so a slow reply does not delay the schedule.
    let cpu0 = CpuSnapshot::take();
    let (g_calls0, g_time0) = stack.counters.gateway.read();
    let start = tokio::time::Instant::now();
    let step = 1.0 / rate;
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
    let pay_secs = start.elapsed().as_secs_f64();
    for p in posts {
        let _ = p.await;
    }
    let (g_calls1, g_time1) = stack.counters.gateway.read();
    let gateway_store = (
        (g_calls1 - g_calls0) as f64 / n as f64,
        g_time1.saturating_sub(g_time0).div_f64(n as f64),
    );
    // Wait until every acknowledged order was seen, or the drain limit.
    let drain_until = Instant::now() + plan.drain;
    let missing = |seen: &[OnceLock<Instant>], replied: &[OnceLock<Instant>]| {
        (0..n).any(|i| replied[i].get().is_some() && seen[i].get().is_none())
    };
    while missing(&seen, &replied) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in &clients {
        c.abort();
    }
    for c in clients {
        let _ = c.await;
    }
    let pay_cpu = CpuSnapshot::take().since(&cpu0);

    let mut before_reply = 0;
    let from_reply = (0..n)
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
        from_post: summarize(from_post),
        from_reply: summarize(from_reply),
        before_reply,
        paid: replied.iter().filter(|r| r.get().is_some()).count(),
        seen: seen.iter().filter(|s| s.get().is_some()).count(),
        rate,
        pay_secs,
        gateway_store,
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
    merchant: wxpay_core::wechat::Merchant,
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
