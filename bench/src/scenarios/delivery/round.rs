//! One round of the delivery scenario: N clients of one [`Way`] wait for their
//! orders, the quiet-window load is measured, the orders are paid at the
//! plan's rate and the round drains until every paid order was seen. It
//! returns the raw [`Outcome`]; turning it into rows and targets is the
//! scenario's (`delivery/mod.rs`), and it never writes to the report.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, GetOrderRequest, OrderStatus, WatchOrderRequest,
};

use crate::{
    measure::{summarize, CpuSnapshot, CpuUse},
    stack::{channels, CommitCounter, Stack},
};

use super::stack_sender;

/// How the clients learn that their order was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    Timer,
    Watch,
    /// The mini program's own watch: one WebSocket per client (as each phone
    /// holds its own) to the poller's HTTP side, with the order's watch token.
    WebSocket,
}

/// What one round measured, raw; the scenario formats it.
pub(super) struct Outcome {
    /// Start of the POST → the client sees SUCCESS (the primary figure).
    pub(super) from_post: crate::measure::Summary,
    /// The gateway's reply → the client sees SUCCESS (0 when the event came first).
    pub(super) from_reply: crate::measure::Summary,
    pub(super) before_reply: usize,
    /// Notifications the gateway acknowledged with SUCCESS.
    pub(super) paid: usize,
    /// Clients that saw SUCCESS, whether or not their notification's reply came back.
    pub(super) seen: usize,
    pub(super) rate: f64,
    pub(super) pay_secs: f64,
    /// The gateway's store calls per notification while paying, and the mean time inside them.
    pub(super) gateway_store: (f64, Duration),
    pub(super) calls_per_s: f64,
    pub(super) commits_per_s: f64,
    pub(super) wait_cpu: CpuUse,
    pub(super) pay_cpu: CpuUse,
}

/// The load over a window: store calls and commits per second, and CPU.
pub(super) struct Load {
    pub(super) calls_per_s: f64,
    pub(super) commits_per_s: f64,
    pub(super) cpu: CpuUse,
}

/// Database calls, commits and CPU over `window`.
pub(super) async fn load_over(
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

/// How one delivery run pays and waits.
pub(super) struct Plan {
    /// N orders are paid over this window, unless that asks more than `max_rate`.
    pub(super) pay_window: Duration,
    /// The quiet window over which the waiting load is measured.
    pub(super) wait_window: Duration,
    pub(super) max_rate: f64,
    /// After the last reply, how long to wait for clients still to see SUCCESS.
    pub(super) drain: Duration,
}

pub(super) async fn one(
    stack: &Stack,
    commits: &mut CommitCounter,
    n: usize,
    way: Way,
    plan: &Plan,
) -> anyhow::Result<Outcome> {
    let rate = (n as f64 / plan.pay_window.as_secs_f64()).min(plan.max_rate);
    let orders = Arc::new(stack.seed(&crate::scenarios::prefix("D"), n).await?);
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
                            include_refunds: false,
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
        Way::WebSocket => {
            let expires = chrono::Utc::now() + chrono::TimeDelta::hours(1);
            for i in 0..n {
                let url = format!(
                    "ws://127.0.0.1:{}/v1/orders/{}/ws?token={}&timeout_seconds=600",
                    stack.poller_http_port,
                    orders[i],
                    stack.watch_secret.issue(&orders[i], expires)
                );
                let (seen, ready) = (seen.clone(), ready.clone());
                clients.push(tokio::spawn(async move {
                    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
                        ready.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let mut first = true;
                    while let Some(Ok(message)) = socket.next().await {
                        let Message::Text(text) = message else {
                            continue;
                        };
                        if first {
                            first = false;
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        // The status as the mini program reads it: JSON, the short name.
                        if text.contains(r#""status":"SUCCESS""#) {
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
