//! The soak's traffic and the truth it keeps: customers that place orders and
//! pay them through the sandbox (notified normally, twice at once, or not at
//! all so only the reconciler can find them), fail then pay, close, and refund
//! in parts, some at once; each call that fails during a fault is retried as
//! a client would (same idempotency key, same out_refund_no). Every order is
//! watched by a WatchOrder client (or a mini program's WebSocket) that
//! reconnects after any error, and the
//! last event it saw is kept for the verdict. What WeChat did is not kept
//! here: the sandbox's ledger is the truth the verdict reads.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::watch;
use tonic::{transport::Channel, Code, Status};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CloseOrderRequest, CreateOrderRequest,
    GetOrderRequest, OrderStatus, RefundOrderRequest, TradeType, WatchOrderRequest,
};

use super::deploy::V3_MERCHANT;

/// How long a client keeps retrying one call before giving up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Work done, counted as it happens.
#[derive(Debug, Default)]
pub struct Counters {
    pub orders: AtomicU64,
    pub create_abandoned: AtomicU64,
    pub paid: AtomicU64,
    pub paid_duplicate: AtomicU64,
    pub paid_dropped: AtomicU64,
    pub failed_then_paid: AtomicU64,
    pub failed_only: AtomicU64,
    pub closes: AtomicU64,
    pub closes_refused: AtomicU64,
    pub refunds: AtomicU64,
    pub refunds_refused: AtomicU64,
    pub refunds_concurrent: AtomicU64,
    pub refunds_settled: AtomicU64,
    pub refunds_closed: AtomicU64,
    pub retries: AtomicU64,
    pub abandoned_calls: AtomicU64,
    pub not_paid_here_in_time: AtomicU64,
    pub watch_reconnects: AtomicU64,
    pub v3_orders: AtomicU64,
    pub pay_after_close: AtomicU64,
    pub ws_watchers: AtomicU64,
    pub paid_after_close: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a watcher saw last, and anything it saw go wrong.
#[derive(Debug, Default)]
pub struct WatchState {
    /// (status, version, refunded_fee) of the last event.
    pub last: Mutex<Option<(i32, i64, i64)>>,
    /// Events older than one already seen (a client shown paid, then unpaid).
    pub regressions: Mutex<Vec<String>>,
    /// The driver's final word: the terminal status it expects, once it has
    /// done all it will do to the order (the watcher may then stop there).
    pub expect_terminal: Mutex<Option<i32>>,
}

impl WatchState {
    /// An event seen: kept as the last, and noted if it is older than one
    /// already seen (a client shown paid, then unpaid).
    fn record(&self, status: i32, version: i64, refunded_fee: i64) {
        let mut last = lock(&self.last);
        if let Some((_, seen, _)) = *last {
            if version < seen {
                let name = OrderStatus::try_from(status).map_or("?", |s| s.as_str_name());
                lock(&self.regressions)
                    .push(format!("version {version} ({name}) after version {seen}"));
            }
        }
        *last = Some((status, version, refunded_fee));
    }

    /// Whether a watcher that just saw a terminal event may stop there.
    fn may_stop(&self) -> bool {
        let last = lock(&self.last).map(|(s, _, _)| s);
        last.is_some() && last == *lock(&self.expect_terminal)
    }
}

/// One order the driver placed: its amount, what it meant to do, the refunds it asked for.
#[derive(Debug, Clone)]
pub struct Placed {
    pub total_fee: i64,
    pub scenario: &'static str,
    pub refunds: Vec<String>,
}

/// Everything the driver did, for the verdict.
#[derive(Default)]
pub struct Truth {
    pub orders: Mutex<BTreeMap<String, Placed>>,
    pub watchers: Mutex<BTreeMap<String, Arc<WatchState>>>,
    pub counters: Counters,
    /// Why calls ended without success: "Call: code: message" → how often.
    pub refusals: Mutex<BTreeMap<String, u64>>,
}

impl Truth {
    fn add_refund(&self, no: &str, refund: &str) {
        if let Some(p) = lock(&self.orders).get_mut(no) {
            p.refunds.push(refund.to_owned());
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The clients a customer uses: payment-service and the pollers through their
/// proxies, and the sandbox's control API (the payer and the bank).
#[derive(Clone)]
pub struct Clients {
    payments: Vec<PaymentServiceClient<Channel>>,
    pollers: Vec<OrderStatusServiceClient<Channel>>,
    /// The pollers' WebSocket side through its proxy, `ws://…`.
    pollers_ws: String,
    pub sandbox_url: String,
    pub http: reqwest::Client,
}

impl Clients {
    pub fn new(
        payments_url: &str,
        pollers_url: &str,
        pollers_ws: &str,
        sandbox_url: &str,
    ) -> anyhow::Result<Self> {
        let mut payments = Vec::new();
        let mut pollers = Vec::new();
        // Several connections each, so the proxies spread them over both replicas.
        for _ in 0..4 {
            let channel = tonic::transport::Endpoint::from_shared(payments_url.to_owned())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(15))
                .connect_lazy();
            payments.push(PaymentServiceClient::new(channel));
            let channel = tonic::transport::Endpoint::from_shared(pollers_url.to_owned())?
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy();
            pollers.push(OrderStatusServiceClient::new(channel));
        }
        Ok(Self {
            payments,
            pollers,
            pollers_ws: pollers_ws.to_owned(),
            sandbox_url: sandbox_url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    fn payments(&self, rng: &mut StdRng) -> PaymentServiceClient<Channel> {
        self.payments[rng.random_range(0..self.payments.len())].clone()
    }

    /// `POST /sandbox/...` on the control API; the status and JSON answer.
    async fn sandbox(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Option<(u16, serde_json::Value)> {
        let res = self
            .http
            .post(format!("{}{path}", self.sandbox_url))
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or_default()))
    }
}

/// What a client does with an error: retry it (the service or the network
/// failed) or take it as the answer.
fn transient(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
    )
}

/// Calls `call` until it answers or fails for good, for up to [`GIVE_UP_AFTER`].
async fn retry<T, F, Fut>(truth: &Truth, what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if transient(&s) && tokio::time::Instant::now() < deadline => {
                inc(&truth.counters.retries);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(s) => {
                if transient(&s) {
                    inc(&truth.counters.abandoned_calls);
                }
                // The message without what varies per order (numbers, amounts).
                let message: String = s
                    .message()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(120)
                    .collect();
                *lock(&truth.refusals)
                    .entry(format!("{what}: {:?}: {message}", s.code()))
                    .or_default() += 1;
                return Err(s);
            }
        }
    }
}

/// One customer: orders one after another until `stop` is set.
pub async fn customer(
    id: u64,
    seed: u64,
    clients: Clients,
    truth: Arc<Truth>,
    stop: Arc<AtomicBool>,
    watchers_stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(id));
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        one_order(id, n, &mut rng, &clients, &truth, &watchers_stop).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    }
}

async fn one_order(
    id: u64,
    n: u64,
    rng: &mut StdRng,
    clients: &Clients,
    truth: &Arc<Truth>,
    watchers_stop: &watch::Receiver<bool>,
) {
    let total_fee: i64 = rng.random_range(100..=20_000);
    let key = format!("chaos-{id}-{n}");
    // Half on the v3 merchant: only its orders are refunded (see deploy).
    let v3 = rng.random_bool(0.5);
    let request = CreateOrderRequest {
        idempotency_key: key.clone(),
        openid: format!("oChaosPayer{id}x{n}"),
        description: "chaos soak".to_owned(),
        total_fee,
        client_ip: "127.0.0.1".to_owned(),
        expire_seconds: 3600,
        merchant: if v3 {
            V3_MERCHANT.to_owned()
        } else {
            String::new()
        },
        trade_type: TradeType::Jsapi as i32,
        ..Default::default()
    };
    let created = retry(truth, "CreateOrder", || {
        let mut c = clients.payments(rng);
        let r = request.clone();
        async move { c.create_order(r).await }
    })
    .await;
    let Ok(created) = created else {
        inc(&truth.counters.create_abandoned);
        return;
    };
    let Some(order) = created.order else {
        inc(&truth.counters.create_abandoned);
        return;
    };
    let no = order.out_trade_no.clone();
    inc(&truth.counters.orders);
    if v3 {
        inc(&truth.counters.v3_orders);
    }
    let roll = rng.random_range(0..100);
    let scenario = match roll {
        0..=7 => "unpaid",
        8..=17 => "close",
        18..=27 => "fail-then-pay",
        28..=31 => "fail",
        _ => "pay",
    };
    lock(&truth.orders).insert(
        no.clone(),
        Placed {
            total_fee,
            scenario,
            refunds: Vec::new(),
        },
    );
    let state = Arc::new(WatchState::default());
    lock(&truth.watchers).insert(no.clone(), state.clone());
    // A third of the payers watch from a mini program (WebSocket), the rest
    // through a backend's gRPC WatchOrder.
    if rng.random_bool(0.33) && !created.watch_token.is_empty() {
        inc(&truth.counters.ws_watchers);
        tokio::spawn(ws_watcher(
            no.clone(),
            clients.pollers_ws.clone(),
            created.watch_token.clone(),
            state.clone(),
            truth.clone(),
            watchers_stop.clone(),
        ));
    } else {
        let poller = clients.pollers[rng.random_range(0..clients.pollers.len())].clone();
        tokio::spawn(watcher(
            no.clone(),
            poller,
            state.clone(),
            truth.clone(),
            watchers_stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;

    let expect = |s: OrderStatus| *lock(&state.expect_terminal) = Some(s as i32);
    match scenario {
        "unpaid" => {}
        "close" => {
            let answer = retry(truth, "CloseOrder", || {
                let mut c = clients.payments(rng);
                let r = CloseOrderRequest {
                    out_trade_no: no.clone(),
                };
                async move { c.close_order(r).await }
            })
            .await;
            match answer {
                Ok(_) => inc(&truth.counters.closes),
                Err(_) => inc(&truth.counters.closes_refused),
            }
            // The payer, who still has the payment page open, tries anyway:
            // WeChat takes it only if the close never reached it.
            if rng.random_bool(0.3) {
                inc(&truth.counters.pay_after_close);
                if pay(rng, clients, truth, &no).await {
                    inc(&truth.counters.paid_after_close);
                    return;
                }
            }
            expect(OrderStatus::Closed);
        }
        "fail" | "fail-then-pay" => {
            let delivery = if rng.random_bool(0.7) {
                "normal"
            } else {
                "drop"
            };
            clients
                .sandbox(
                    &format!("/sandbox/orders/{no}/fail"),
                    serde_json::json!({ "delivery": delivery }),
                )
                .await;
            if scenario == "fail" {
                inc(&truth.counters.failed_only);
                expect(OrderStatus::Payerror);
            } else {
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
                if pay(rng, clients, truth, &no).await {
                    inc(&truth.counters.failed_then_paid);
                    if v3 {
                        refunds(rng, clients, truth, &no, total_fee, &state).await;
                    }
                }
            }
        }
        _ => {
            if pay(rng, clients, truth, &no).await && v3 {
                refunds(rng, clients, truth, &no, total_fee, &state).await;
            }
        }
    }
}

/// The payer pays in the sandbox; WeChat notifies normally, twice at once
/// (copies that land on either gateway), or not at all.
async fn pay(rng: &mut StdRng, clients: &Clients, truth: &Truth, no: &str) -> bool {
    let roll = rng.random_range(0..100);
    let body = match roll {
        0..=54 => serde_json::json!({}),
        55..=79 => {
            serde_json::json!({ "delivery": "duplicate", "duplicates": rng.random_range(2..=3) })
        }
        _ => serde_json::json!({ "delivery": "drop" }),
    };
    let paid = matches!(
        clients
            .sandbox(&format!("/sandbox/orders/{no}/pay"), body)
            .await,
        Some((200, _))
    );
    if paid {
        inc(&truth.counters.paid);
        match roll {
            55..=79 => inc(&truth.counters.paid_duplicate),
            80.. => inc(&truth.counters.paid_dropped),
            _ => {}
        }
    }
    paid
}

/// Some paid orders are refunded: one part, two parts one after the other,
/// two parts at once (together possibly more than was paid), or all of it.
async fn refunds(
    rng: &mut StdRng,
    clients: &Clients,
    truth: &Arc<Truth>,
    no: &str,
    total: i64,
    state: &WatchState,
) {
    if !rng.random_bool(0.7) {
        return;
    }
    // A client refunds what it sees paid.
    let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
    loop {
        let mut c = clients.payments(rng);
        let seen = c
            .get_order(GetOrderRequest {
                out_trade_no: no.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(seen, Ok(s) if s == OrderStatus::Success as i32) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            inc(&truth.counters.not_paid_here_in_time);
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut refund_no = 0;
    let mut next = |truth: &Truth| {
        refund_no += 1;
        let r = format!("{no}R{refund_no}");
        truth.add_refund(no, &r);
        r
    };
    match rng.random_range(0..4) {
        0 => {
            let fee = rng.random_range(1..=total / 2);
            let r = next(truth);
            refund(rng, clients, truth, no, &r, fee).await;
        }
        1 => {
            for _ in 0..2 {
                let r = next(truth);
                refund(rng, clients, truth, no, &r, total / 3).await;
            }
        }
        2 => {
            let (a, b) = (next(truth), next(truth));
            let fee_a = rng.random_range(total / 2..=total * 2 / 3);
            let fee_b = rng.random_range(total / 3..=total * 2 / 3);
            let mut rng_a = StdRng::seed_from_u64(rng.random());
            let mut rng_b = StdRng::seed_from_u64(rng.random());
            inc(&truth.counters.refunds_concurrent);
            tokio::join!(
                refund(&mut rng_a, clients, truth, no, &a, fee_a),
                refund(&mut rng_b, clients, truth, no, &b, fee_b)
            );
        }
        _ => {
            let r = next(truth);
            if refund(rng, clients, truth, no, &r, total).await {
                *lock(&state.expect_terminal) = Some(OrderStatus::Refund as i32);
            }
        }
    }
}

/// RefundOrder until it answers, then the bank settles it (most succeed, a
/// few are closed), its notification delivered normally, twice or not at all.
/// True if the refund was accepted and settled SUCCESS by this call.
async fn refund(
    rng: &mut StdRng,
    clients: &Clients,
    truth: &Truth,
    no: &str,
    out_refund_no: &str,
    fee: i64,
) -> bool {
    let fee = fee.max(1);
    inc(&truth.counters.refunds);
    let request = RefundOrderRequest {
        out_trade_no: no.to_owned(),
        out_refund_no: out_refund_no.to_owned(),
        refund_fee: fee,
        reason: "chaos soak".to_owned(),
    };
    let answer = retry(truth, "RefundOrder", || {
        let mut c = clients.payments(rng);
        let r = request.clone();
        async move { c.refund_order(r).await }
    })
    .await;
    if answer.is_err() {
        inc(&truth.counters.refunds_refused);
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
    let status = if rng.random_bool(0.9) {
        "SUCCESS"
    } else {
        "REFUNDCLOSE"
    };
    let delivery = match rng.random_range(0..100) {
        0..=59 => serde_json::json!({ "status": status }),
        60..=79 => {
            serde_json::json!({ "status": status, "delivery": "duplicate", "duplicates": 2 })
        }
        _ => serde_json::json!({ "status": status, "delivery": "drop" }),
    };
    let settled = matches!(
        clients
            .sandbox(
                &format!("/sandbox/refunds/{out_refund_no}/settle"),
                delivery
            )
            .await,
        Some((200, _))
    );
    if settled {
        if status == "SUCCESS" {
            inc(&truth.counters.refunds_settled);
        } else {
            inc(&truth.counters.refunds_closed);
        }
    }
    settled && status == "SUCCESS"
}

/// A phone watching one order: WatchOrder with refunds, reconnecting after
/// any error or end, until the order reaches the terminal status the driver
/// expects, or the soak stops watching.
async fn watcher(
    no: String,
    mut client: OrderStatusServiceClient<Channel>,
    state: Arc<WatchState>,
    truth: Arc<Truth>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let request = WatchOrderRequest {
            out_trade_no: no.clone(),
            timeout_seconds: 30,
            include_refunds: true,
        };
        let opened = tokio::select! {
            r = client.watch_order(request) => r,
            _ = stop.changed() => return,
        };
        let mut ended_terminal = false;
        match opened {
            Err(_) => inc(&truth.counters.watch_reconnects),
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let message = tokio::select! {
                        m = tokio::time::timeout(Duration::from_secs(45), stream.message()) => m,
                        _ = stop.changed() => return,
                    };
                    match message {
                        Ok(Ok(Some(event))) => {
                            state.record(event.status, event.version, event.refunded_fee);
                            ended_terminal = event.terminal;
                        }
                        Ok(Ok(None)) => break,
                        Ok(Err(_)) | Err(_) => {
                            inc(&truth.counters.watch_reconnects);
                            break;
                        }
                    }
                }
            }
        }
        if ended_terminal && state.may_stop() {
            return;
        }
        let pause = if ended_terminal { 2000 } else { 300 };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A mini program watching one order over the poller's WebSocket (with the
/// watch token CreateOrder handed out), reconnecting as `watcher` does.
async fn ws_watcher(
    no: String,
    base: String,
    token: String,
    state: Arc<WatchState>,
    truth: Arc<Truth>,
    mut stop: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url =
        format!("{base}/v1/orders/{no}/ws?token={token}&timeout_seconds=30&include_refunds=true");
    loop {
        if *stop.borrow() {
            return;
        }
        let opened = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url.as_str())) => r,
            _ = stop.changed() => return,
        };
        let mut ended_terminal = false;
        match opened {
            Ok(Ok((mut socket, _))) => loop {
                let message = tokio::select! {
                    m = tokio::time::timeout(Duration::from_secs(45), socket.next()) => m,
                    _ = stop.changed() => return,
                };
                match message {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let event: serde_json::Value =
                            serde_json::from_str(&text).unwrap_or_default();
                        let status = event["status"]
                            .as_str()
                            .and_then(|s| OrderStatus::from_str_name(&format!("ORDER_STATUS_{s}")))
                            .map_or(0, |s| s as i32);
                        state.record(
                            status,
                            event["version"].as_i64().unwrap_or_default(),
                            event["refunded_fee"].as_i64().unwrap_or_default(),
                        );
                        ended_terminal = event["terminal"] == true;
                    }
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_))) | Err(_) => {
                        inc(&truth.counters.watch_reconnects);
                        break;
                    }
                }
            },
            _ => inc(&truth.counters.watch_reconnects),
        }
        if ended_terminal && state.may_stop() {
            return;
        }
        let pause = if ended_terminal { 2000 } else { 300 };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stop.changed() => return,
        }
    }
}
