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
    measure::{ms, summarize, Summary},
    report::Section,
    stack::{channels, Stack},
    Mode,
};

struct Rate {
    per_s: f64,
    latency: Summary,
    errors: u64,
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
    let service = {
        let tag = tag.clone();
        let (p50, l, e) = drive(concurrency, window, move |i| {
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
                    })
                    .await?;
                Ok(true)
            }
        })
        .await;
        Rate {
            per_s: p50,
            latency: l,
            errors: e,
        }
    };

    let ceiling = {
        let pool = stack.pool.clone();
        let tag = tag.clone();
        let (r, l, e) = drive(concurrency, window, move |i| {
            let pool = pool.clone();
            let no = format!("{tag}R{i}");
            let key = format!("{tag}-raw-{i}");
            async move {
                // The statement PgStore::insert_order runs, with the same RETURNING.
                sqlx::query(
                    "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
                     attach, client_ip, sign_type, expires_at) \
                     VALUES ($1, $2, 'NOTPAY', $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (idempotency_key) DO NOTHING RETURNING out_trade_no, idempotency_key, status, \
                     version, openid, description, total_fee, attach, client_ip, sign_type, expires_at, prepay_id, \
                     prepay_expires_at, transaction_id, cash_fee, created_at, updated_at, paid_at",
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
        .await;
        Rate {
            per_s: r,
            latency: l,
            errors: e,
        }
    };

    let mut section = Section::new(
        "3. CreateOrder",
        command,
        &["path", "orders/s", "p50 ms", "p99 ms", "errors"],
    );
    section.method = format!(
        "{concurrency} concurrent callers for {}s each. The service path is gRPC CreateOrder → insert → \
         unifiedorder at the in-process WeChat sandbox (HTTP/XML, signed both ways) → store the prepay_id → \
         sign the wx.requestPayment parameters. The ceiling is the same INSERT … RETURNING through sqlx \
         at the same concurrency, no service.",
        window.as_secs()
    );
    for (name, r) in [
        ("CreateOrder via payment-service + sandbox", &service),
        ("ceiling: raw INSERT via sqlx", &ceiling),
    ] {
        section.rows.push(vec![
            name.into(),
            format!("{:.0}", r.per_s),
            ms(r.latency.p50),
            ms(r.latency.p99),
            r.errors.to_string(),
        ]);
    }
    let ratio = service.per_s / ceiling.per_s.max(1e-9);
    section.target(
        "CreateOrder ≥ 0.5× the raw INSERT",
        format!("{ratio:.2}×"),
        ratio >= 0.5 && service.errors == 0,
    );
    Ok(section)
}
