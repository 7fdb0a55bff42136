//! The faults, drawn from a seeded RNG at random intervals and left to
//! overlap: kill -9 of any service replica (started again after a delay with
//! the same environment), Postgres cut (connections dropped, new ones refused
//! or blackholed) then healed, the Postgres server itself killed and restarted,
//! latency on the Postgres link, WeChat cut off from both gateways, Redis killed and
//! restarted empty, and WeChat (the sandbox) answering SYSTEMERROR, hanging,
//! or doing what it was asked and then hanging. It counts what it injected
//! and when the last fault was healed; it never looks at the money.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::{task::JoinSet, time::Instant};

use super::{deploy::Deployment, proxy::Cut, traffic::lock};

/// What was injected, by kind, and when the last one ended.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub by_kind: Mutex<BTreeMap<&'static str, u64>>,
    pub last_healed: Mutex<Option<Instant>>,
    /// Lines for the progress output.
    pub events: Mutex<Vec<String>>,
}

impl FaultLog {
    fn injected(&self, kind: &'static str, detail: String) {
        *lock(&self.by_kind).entry(kind).or_default() += 1;
        lock(&self.events).push(format!("{kind}: {detail}"));
    }

    fn healed(&self) {
        *lock(&self.last_healed) = Some(Instant::now());
    }

    pub fn total(&self) -> u64 {
        lock(&self.by_kind).values().sum()
    }
}

/// Injects faults every `mean_gap` on average until `stop`, then waits for
/// every fault it started to be healed (services restarted, links healed).
pub async fn inject(
    seed: u64,
    mean_gap: Duration,
    deployment: Arc<Deployment>,
    log: Arc<FaultLog>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00c4_a05f_a017);
    let mut running = JoinSet::new();
    // Kinds that must not overlap with themselves (one cut, one latency at a time).
    let postgres_busy = Arc::new(AtomicBool::new(false));
    let latency_busy = Arc::new(AtomicBool::new(false));
    let redis_busy = Arc::new(AtomicBool::new(false));
    while !stop.load(Ordering::SeqCst) {
        let gap = mean_gap.mul_f64(rng.random_range(0.3..1.7));
        let until = Instant::now() + gap;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let roll = rng.random_range(0..100);
        let d = deployment.clone();
        let l = log.clone();
        let fault_seed: u64 = rng.random();
        match roll {
            0..=29 => {
                let i = rng.random_range(0..d.services.len());
                running.spawn(kill_and_restart(d, l, i, fault_seed));
            }
            30..=41 => {
                if postgres_busy.swap(true, Ordering::SeqCst) {
                    continue;
                }
                let busy = postgres_busy.clone();
                let crash = rng.random_bool(0.3);
                running.spawn(async move {
                    if crash {
                        crash_postgres(d, l, fault_seed).await;
                    } else {
                        cut_postgres(d, l, fault_seed).await;
                    }
                    busy.store(false, Ordering::SeqCst);
                });
            }
            42..=49 => {
                if latency_busy.swap(true, Ordering::SeqCst) {
                    continue;
                }
                let busy = latency_busy.clone();
                running.spawn(async move {
                    slow_postgres(d, l, fault_seed).await;
                    busy.store(false, Ordering::SeqCst);
                });
            }
            50..=57 => {
                if redis_busy.swap(true, Ordering::SeqCst) {
                    continue;
                }
                let busy = redis_busy.clone();
                running.spawn(async move {
                    restart_redis(d, l, fault_seed).await;
                    busy.store(false, Ordering::SeqCst);
                });
            }
            58..=65 => {
                running.spawn(cut_notifications(d, l, fault_seed));
            }
            _ => {
                wechat_fault(&d, &l, &mut rng).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
}

async fn kill_and_restart(d: Arc<Deployment>, log: Arc<FaultLog>, i: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = Duration::from_millis(rng.random_range(500..6000));
    let name = {
        let mut s = d.services[i].lock().await;
        if !s.kill_9() {
            return;
        }
        s.name.clone()
    };
    let kind = if name.starts_with("payment") {
        "kill -9 payment-service"
    } else if name.starts_with("gateway") {
        "kill -9 gateway"
    } else {
        "kill -9 poller"
    };
    log.injected(kind, format!("{name}, down {down:?}"));
    tokio::time::sleep(down).await;
    // A replica that fails to start (its port not yet free) is tried again.
    for _ in 0..20 {
        let mut s = d.services[i].lock().await;
        if s.restart().is_ok() {
            drop(s);
            tokio::time::sleep(Duration::from_millis(500)).await;
            if d.services[i].lock().await.is_up() {
                break;
            }
        }
    }
    log.healed();
}

async fn cut_postgres(d: Arc<Deployment>, log: Arc<FaultLog>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let how = if rng.random_bool(0.5) {
        Cut::Refuse
    } else {
        Cut::Blackhole
    };
    let down = Duration::from_millis(rng.random_range(1000..8000));
    log.injected("postgres cut", format!("{how:?} for {down:?}"));
    d.postgres_proxy.cut(how);
    tokio::time::sleep(down).await;
    d.postgres_proxy.heal();
    log.healed();
}

/// The server itself dies (SIGKILL to every one of its processes, as a
/// power cut) and comes back on the same directory after crash recovery.
async fn crash_postgres(d: Arc<Deployment>, log: Arc<FaultLog>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = Duration::from_millis(rng.random_range(500..5000));
    log.injected("postgres kill -9", format!("down {down:?}"));
    d.postgres.lock().await.kill_9();
    tokio::time::sleep(down).await;
    for _ in 0..10 {
        if d.postgres.lock().await.restart().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    log.healed();
}

/// WeChat cannot reach either gateway for a while: its notifications fail
/// and are retried on WeChat's schedule.
async fn cut_notifications(d: Arc<Deployment>, log: Arc<FaultLog>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = Duration::from_millis(rng.random_range(1000..6000));
    log.injected("notify link cut", format!("for {down:?}"));
    d.gateways.cut(Cut::Refuse);
    tokio::time::sleep(down).await;
    d.gateways.heal();
    log.healed();
}

async fn slow_postgres(d: Arc<Deployment>, log: Arc<FaultLog>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let latency = Duration::from_millis(rng.random_range(20..300));
    let span = Duration::from_millis(rng.random_range(2000..10_000));
    log.injected("postgres latency", format!("{latency:?} for {span:?}"));
    d.postgres_proxy.set_latency(latency);
    tokio::time::sleep(span).await;
    d.postgres_proxy.set_latency(Duration::ZERO);
    log.healed();
}

async fn restart_redis(d: Arc<Deployment>, log: Arc<FaultLog>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = Duration::from_millis(rng.random_range(0..4000));
    log.injected("redis restart", format!("down {down:?}"));
    d.redis.lock().await.kill();
    tokio::time::sleep(down).await;
    for _ in 0..10 {
        if d.redis.lock().await.restart().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    log.healed();
}

/// The next few WeChat API calls fail: SYSTEMERROR, a hang before anything
/// is done, or a hang after it was done (the outcome unknown to the caller).
async fn wechat_fault(d: &Deployment, log: &FaultLog, rng: &mut StdRng) {
    let (kind, field, n) = match rng.random_range(0..4) {
        3 => (
            "wechat FREQUENCY_LIMITED (v3)",
            "frequency_limited",
            rng.random_range(1..=4),
        ),
        0 => ("wechat SYSTEMERROR", "systemerror", rng.random_range(1..=6)),
        1 => ("wechat timeout", "timeout", rng.random_range(1..=2)),
        _ => (
            "wechat process_then_timeout",
            "process_then_timeout",
            rng.random_range(1..=3),
        ),
    };
    let body = serde_json::json!({ field: n });
    let armed = d
        .http()
        .post(format!("{}/sandbox/faults", d.sandbox_url))
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if armed {
        log.injected(kind, format!("next {n} calls"));
        log.healed();
    }
}
