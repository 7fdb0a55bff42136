//! Scenario 4, notifications: distinct paid notifications per second through the
//! gateway (parse, verify, load the order, conditional UPDATE + outbox INSERT,
//! audit row, publish), against the ceiling of the raw conditional UPDATE + outbox
//! INSERT in the same run; then duplicates, which change nothing.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;

use crate::{
    report::Section,
    runs,
    scenarios::{
        create::{measure, Rate, RATE_COLUMNS},
        delivery::stack_sender,
    },
    stack::Stack,
    Mode,
};

/// The statement PgStore::transition runs, for a paid notification.
const TRANSITION: &str = "WITH updated AS ( \
    UPDATE orders SET status = 'SUCCESS', version = version + 1, \
        transaction_id = COALESCE($2, transaction_id), cash_fee = COALESCE($3, cash_fee), \
        paid_at = now(), updated_at = now() \
    WHERE out_trade_no = $1 AND status = ANY($4) \
    RETURNING out_trade_no, idempotency_key, status, version, openid, description, total_fee, attach, \
        client_ip, sign_type, expires_at, prepay_id, prepay_expires_at, transaction_id, cash_fee, \
        created_at, updated_at, paid_at, refunded_fee, merchant, trade_type, sub_openid, product_id, \
        scene_info, pay_url \
 ), ev AS ( \
    INSERT INTO order_events (out_trade_no, status, version, transaction_id, total_fee, source) \
    SELECT out_trade_no, status, version, transaction_id, total_fee, 'NOTIFY' FROM updated \
    RETURNING id, occurred_at \
 ) SELECT updated.*, ev.id AS event_id, ev.occurred_at AS event_occurred_at FROM updated, ev";

pub async fn run(stack: &Stack, mode: Mode, command: &str) -> anyhow::Result<Section> {
    let (concurrency, window, seeded) = match mode {
        Mode::Full => (16, Duration::from_secs(5), 40_000),
        Mode::Smoke => (4, Duration::from_secs(1), 2_000),
    };
    let sender = Arc::new(stack_sender(stack));

    let paid = Arc::new(stack.seed(&super::prefix("N"), seeded).await?);
    let gateway = &stack.counters.gateway;
    let distinct = if !runs("distinct") {
        Rate::default()
    } else {
        let (sender, paid) = (sender.clone(), paid.clone());
        measure(Some(gateway), concurrency, window, move |i| {
            let (sender, paid) = (sender.clone(), paid.clone());
            async move {
                let Some(no) = paid.get(i as usize) else {
                    return Ok(false);
                };
                anyhow::ensure!(sender.send(no).await?, "gateway did not answer SUCCESS");
                Ok(true)
            }
        })
        .await
    };
    let mut done = distinct.latency.n.min(paid.len());
    if !distinct.measured && runs("duplicates") {
        // The duplicates need paid orders: pay some, unmeasured.
        done = 2_000.min(paid.len());
        futures::stream::iter(paid[..done].iter().cloned())
            .map(|no| {
                let sender = sender.clone();
                async move { sender.send(&no).await }
            })
            .buffer_unordered(concurrency)
            .for_each(|_| async {})
            .await;
    }

    let distinct_v3 = if !runs("distinct_v3") {
        Rate::default()
    } else {
        distinct_v3(stack, concurrency, window, seeded / 4).await?
    };

    let ceiling = if !runs("ceiling") {
        Rate::default()
    } else {
        let raw = Arc::new(stack.seed(&super::prefix("R"), seeded).await?);
        let pool = stack.pool.clone();
        measure(None, concurrency, window, move |i| {
            let (pool, raw) = (pool.clone(), raw.clone());
            async move {
                let Some(no) = raw.get(i as usize) else {
                    return Ok(false);
                };
                let tx: String = format!("4200{no}")
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(32)
                    .collect();
                sqlx::query(TRANSITION)
                    .bind(no)
                    .bind(tx)
                    .bind(1i64)
                    .bind(vec!["NOTPAY", "USERPAYING"])
                    .fetch_optional(&pool)
                    .await?;
                Ok(true)
            }
        })
        .await
    };

    // Let the gateway's background publishes finish before counting what duplicates write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events")
        .fetch_one(&stack.pool)
        .await?;
    // Pre-encode the duplicates so the sender's own signing is not in the figure.
    let bodies: Arc<Vec<String>> = Arc::new(
        paid[..done.clamp(1, 2_000)]
            .iter()
            .map(|no| crate::notification::paid_xml(&stack.merchant, no, 1))
            .collect::<anyhow::Result<_>>()?,
    );
    let duplicates = if !runs("duplicates") {
        Rate::default()
    } else {
        let (sender, bodies) = (sender.clone(), bodies.clone());
        measure(Some(gateway), concurrency, window, move |i| {
            let (sender, bodies) = (sender.clone(), bodies.clone());
            async move {
                let body = bodies[(i as usize) % bodies.len()].clone();
                anyhow::ensure!(
                    sender.send_body(body).await?,
                    "gateway did not answer SUCCESS"
                );
                Ok(true)
            }
        })
        .await
    };
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events")
        .fetch_one(&stack.pool)
        .await?;

    let header: Vec<&str> = std::iter::once("path").chain(RATE_COLUMNS).collect();
    let mut section = Section::new("4. Notifications", command, &header);
    section.method = format!(
        "{concurrency} concurrent senders (HTTP/1.1 keep-alive) for {}s each. Distinct: each notification \
         pays a different seeded order (MD5, no sign_type: the signature's length says MD5; the gateway \
         verifies, then runs the conditional UPDATE + outbox INSERT guarded by the merchant, sign type and \
         amount the message states, with no read of the order first; the audit row and the outbox's \
         published mark go into background batches; the event is published after commit). Ceiling: the \
         same UPDATE + outbox INSERT statement, unguarded, through sqlx at the same concurrency. \
         Duplicates: notifications for orders already paid, replayed. \"store calls / op\" and the time \
         inside them come from the gateway's counting store wrapper (wall-clock per call, pool wait \
         included; batched writes count once per batch, and run beside the replies). CPU: this \
         process, Postgres and every other process on the machine (from /proc/stat), in % of one core \
         over the window; a large last figure means the run was disturbed.",
        window.as_secs()
    );
    for (name, r) in [
        ("distinct paid notifications via gateway", &distinct),
        (
            "distinct paid v3 notifications via gateway (RSA-verified, AES-256-GCM-sealed)",
            &distinct_v3,
        ),
        ("ceiling: raw conditional UPDATE + outbox INSERT", &ceiling),
        ("duplicates via gateway", &duplicates),
    ] {
        let mut row = vec![name.to_string()];
        row.extend(r.cells());
        section.rows.push(row);
    }
    if distinct.measured && ceiling.measured {
        let ratio = distinct.per_s / ceiling.per_s.max(1e-9);
        section.target(
            "distinct ≥ 0.5× the ceiling",
            format!("{ratio:.2}×"),
            ratio >= 0.5 && distinct.errors == 0,
        );
    }
    if distinct_v3.measured && distinct.measured {
        section.notes.push(format!(
            "v3: {:.0}/s distinct against v2's {:.0}/s in the same run ({:.2}×); each v3 body is signed with \
             WeChat's key before the window opens (pre-signed, so the sender's RSA signing is not in the \
             figure) and verified by the gateway with RSA-2048 before the same transition as v2.",
            distinct_v3.per_s,
            distinct.per_s,
            distinct_v3.per_s / distinct.per_s.max(1e-9)
        ));
    }
    if duplicates.measured {
        section.target(
            "duplicates ≥ 20,000/s",
            format!("{:.0}/s", duplicates.per_s),
            duplicates.per_s >= 20_000.0 && duplicates.errors == 0,
        );
    }
    section.notes.push(format!(
        "Order events written during the duplicates: {} (no status change, no event). A duplicate of a \
         payment the gateway has seen is answered from its settled cache without a database read; its \
         audit row goes into a batch written in the background (up to 512 rows per statement), so its \
         store calls / op is a fraction of one.",
        events_after - events_before
    ));
    if distinct.latency.n >= seeded || ceiling.latency.n >= seeded {
        section.notes.push(format!("The {seeded} seeded orders ran out before the window ended; rates are over the time taken."));
    }
    Ok(section)
}

/// Distinct v3 payment notifications through the gateway, for the stack's v3
/// merchant: `count` seeded orders, each notification signed with WeChat's
/// key beforehand (signing is not the gateway's work), then POSTed.
async fn distinct_v3(
    stack: &Stack,
    concurrency: usize,
    window: Duration,
    count: usize,
) -> anyhow::Result<Rate> {
    let Some(v3) = stack.v3() else {
        anyhow::bail!("the bench's stack hosts no v3 merchant");
    };
    let Some(keys) = v3.entry.v3.as_ref() else {
        anyhow::bail!("the v3 demo merchant has no v3 keys");
    };
    let orders = stack.seed_v3(&super::prefix("V"), count).await?;
    let wechat = v3.wechat_signer()?;
    let (app_id, mch_id, apiv3_key, key_id) = (
        v3.entry.merchant.app_id.clone(),
        v3.entry.merchant.mch_id.clone(),
        keys.apiv3_key.clone(),
        v3.wechat_key_id(),
    );
    let now = chrono::Utc::now().timestamp();
    // RSA signing is ~1 ms each: on every core, before the window.
    let halves: Vec<Vec<String>> = orders
        .chunks(orders.len().div_ceil(2).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for half in halves {
        let (wechat, app_id, mch_id, apiv3_key) = (
            wechat.clone(),
            app_id.clone(),
            mch_id.clone(),
            apiv3_key.clone(),
        );
        tasks.push(tokio::task::spawn_blocking(move || {
            let parties = crate::notification_v3::V3Parties {
                app_id: &app_id,
                mch_id: &mch_id,
                apiv3_key: &apiv3_key,
                wechat: &wechat,
                wechat_key_id: key_id,
            };
            half.iter()
                .map(|no| crate::notification_v3::paid_v3(&parties, no, 1, now))
                .collect::<anyhow::Result<Vec<_>>>()
        }));
    }
    let mut signed = Vec::with_capacity(orders.len());
    for t in tasks {
        signed.extend(t.await??);
    }
    let signed = Arc::new(signed);
    let (http, url) = (stack.http.clone(), stack.notify_v3_url());
    Ok(measure(
        Some(&stack.counters.gateway),
        concurrency,
        window,
        move |i| {
            let (http, url, signed) = (http.clone(), url.clone(), signed.clone());
            async move {
                let Some(n) = signed.get(i as usize) else {
                    return Ok(false);
                };
                let mut req = http.post(&url).body(n.body.clone());
                for (k, v) in &n.headers {
                    req = req.header(*k, v);
                }
                let status = req.send().await?.status();
                anyhow::ensure!(status.is_success(), "gateway answered {status}");
                Ok(true)
            }
        },
    )
    .await)
}
