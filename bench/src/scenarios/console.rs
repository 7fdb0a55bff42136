//! Scenario 7 in the report (6 is the hand-run Redis Cluster section), the
//! operator console on a million orders: a database of its own
//! (migrated by `PgStore::connect`, as the console's own start does) seeded in
//! a few `INSERT … SELECT … FROM generate_series` statements with three
//! merchants, every status, 50,000 payers and 90 days of orders, then the real
//! console (`console::Application`) on a loopback port, signed in to over
//! HTTP like a browser, and the latency of its pages one request at a time:
//! the orders list with each kind of filter, the next page, the totals, an
//! order's page and the dashboard. Every response must be 200 and hold the
//! row the database says belongs on it, so an error page is never measured.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection, PgPool, Row};
use wxpay_store::{console::ConsoleStore, postgres::PgOptions, testing, PgStore};

use crate::{
    machine::Machine,
    measure::{ms, summarize, Summary},
    report::Section,
    Mode,
};

/// The three merchants the orders are spread over (70% / 20% / 10%).
const MERCHANTS: [&str; 3] = ["1900000101", "1900000102", "1900000103"];
/// Distinct payers.
const OPENIDS: i64 = 50_000;
/// The orders' creation times cover this many days up to now.
const DAYS: i64 = 90;
/// Rows per seeding statement: a progress line each, and no single statement
/// holds a million rows' worth of WAL and index work at once.
const CHUNK: i64 = 250_000;
/// The console's one operator.
const OPERATOR: &str = "bench";

/// The figure the brief sets for the first page.
const FIRST_PAGE_P99: Duration = Duration::from_millis(100);

pub async fn run(machine: &Machine, mode: Mode, command: &str) -> anyhow::Result<Section> {
    let orders: i64 = match mode {
        Mode::Full => 1_000_000,
        Mode::Smoke => 20_000,
    };
    let url = testing::fresh_database_url().await?;
    let name = url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .unwrap_or_default()
        .to_owned();
    let outcome = measure(&url, machine, mode, command, orders).await;
    // The seeded database goes whatever happened: a million orders are half a gigabyte.
    let dropped = async {
        let mut admin = PgConnection::connect(&testing::admin_url()).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "")
        ))
        .execute(&mut admin)
        .await?;
        anyhow::Ok(())
    };
    if let Err(e) = dropped.await {
        eprintln!("dropping the console benchmark database {name}: {e:#}");
    }
    outcome
}

/// One page measured: its URLs (cycled through), what each must contain, and how often.
struct Probe {
    what: String,
    /// The first URL, as the table shows it.
    shown: String,
    urls: Vec<(String, String)>,
    iterations: usize,
}

impl Probe {
    fn one(what: &str, url: String, expect: String, iterations: usize) -> Self {
        Self {
            what: what.to_owned(),
            shown: url.clone(),
            urls: vec![(url, expect)],
            iterations,
        }
    }

    fn many(what: &str, urls: Vec<(String, String)>, iterations: usize) -> anyhow::Result<Self> {
        let shown = urls
            .first()
            .map(|(u, _)| u.clone())
            .context("no sampled orders to look up")?;
        Ok(Self {
            what: what.to_owned(),
            shown,
            urls,
            iterations,
        })
    }
}

async fn measure(
    url: &str,
    machine: &Machine,
    mode: Mode,
    command: &str,
    orders: i64,
) -> anyhow::Result<Section> {
    // The console's own store, exactly as `console` opens it (its migrations included).
    let store = Arc::new(
        PgStore::connect(url, PgOptions::default())
            .await
            .context("opening the console's store")?,
    );
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
    let prefix = super::prefix("K");
    let seed_started = Instant::now();
    seed(&pool, &prefix, orders).await?;
    let seeded_in = seed_started.elapsed();
    let size: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('orders')")
        .fetch_one(&pool)
        .await?;
    // Why a filtered total costs nearly what the whole table does: the pages
    // its rows lie on, against the table's.
    let (pages, refund_pages): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT relpages::bigint FROM pg_class WHERE relname = 'orders'), \
           (SELECT count(DISTINCT (ctid::text::point)[0])::bigint FROM orders WHERE status = 'REFUND')",
    )
    .fetch_one(&pool)
    .await?;
    eprintln!(
        "console: {orders} orders seeded and analyzed in {:.1} s ({} MiB with indexes)",
        seeded_in.as_secs_f64(),
        size / (1024 * 1024)
    );

    // The console, in this process, on a free loopback port.
    let password = console::users::generate_password();
    let users = console::users::Users::from_new(&[console::users::NewUser {
        name: OPERATOR.to_owned(),
        role: console::users::Role::Operator,
        merchants: None,
        password: password.clone(),
    }])?;
    let data: Arc<dyn ConsoleStore> = store.clone();
    // Nothing here refunds or queries: payment-service's address is never dialled.
    let actions = console::actions::Actions::new("http://127.0.0.1:1", None, data.clone())?;
    let app = console::Application::build_with(console::Parts {
        addr: "127.0.0.1:0".parse()?,
        store: data,
        users: console::users::UserBook::fixed(users),
        watch: None,
        actions,
        session_key: None,
        secure_cookie: false,
    })
    .await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let result = async {
        let client = sign_in(&base, &password).await?;
        let probes = probes(&pool, &client, &base, mode, orders).await?;
        let mut measured = Vec::new();
        for probe in &probes {
            let (summary, bytes) = time_probe(&client, &base, probe, mode).await?;
            eprintln!(
                "console: {}: p50 {} ms, p99 {} ms",
                probe.what,
                ms(summary.p50),
                ms(summary.p99)
            );
            measured.push((summary, bytes));
        }
        anyhow::Ok((probes, measured))
    }
    .await;
    let _ = stop.send(());
    match server.await {
        Ok(Err(e)) => eprintln!("the console stopped with an error: {e:#}"),
        Err(e) => eprintln!("the console's task failed: {e}"),
        Ok(Ok(())) => {}
    }
    pool.close().await;
    let (probes, measured) = result?;

    let count = console::format::count(orders);
    let mut section = Section::new(
        &format!("7. Operator console on {count} orders"),
        command,
        &[
            "page",
            "request (first of the set)",
            "requests",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "max ms",
            "KiB",
        ],
    );
    section.method = format!(
        "A fresh database migrated by `PgStore::connect`, seeded with {count} orders in \
         `INSERT … SELECT … FROM generate_series` statements ({} merchants at 70/20/10%, 85% SUCCESS, \
         5% REFUND with a refund row each, 5% CLOSED, 5% NOTPAY, {} payers, created over the last \
         {DAYS} days, amounts of ¥0.01 to ¥500.00), the last two days' payments with their event and \
         notification, a few anomalies, then `ANALYZE`. The real console (`console::Application`, \
         Postgres store, no live watch) serves on a loopback port; one signed-in client (its \
         session cookie) asks for each page one request at a time after a warm-up. Every answer \
         must be 200 and contain the order the database says is its first row (or the exact count, \
         for the totals), so an error page cannot be measured. Lookups cycle over sampled orders.",
        MERCHANTS.len(),
        console::format::count(OPENIDS),
    );
    for (probe, (s, bytes)) in probes.iter().zip(&measured) {
        section.rows.push(vec![
            probe.what.clone(),
            format!("`GET {}`", probe.shown),
            s.n.to_string(),
            ms(s.p50),
            ms(s.p99),
            ms(s.mean),
            ms(s.max),
            format!("{:.1}", *bytes as f64 / 1024.0),
        ]);
    }
    let first = &measured[0].0;
    section.target(
        format!(
            "first page of {count} orders < {} ms (p99)",
            FIRST_PAGE_P99.as_millis()
        ),
        format!("{} ms (p50 {} ms)", ms(first.p99), ms(first.p50)),
        first.n > 0 && first.p99 < FIRST_PAGE_P99,
    );
    section.notes.push(format!(
        "Seeding and `ANALYZE`: {:.1} s; the orders table with its indexes: {} MiB.",
        seeded_in.as_secs_f64(),
        size / (1024 * 1024)
    ));
    section.notes.push(format!(
        "Measured {} on {} cores ({}), {} memory, PostgreSQL {}, {}; load average at start {}.",
        machine.date,
        machine.nproc,
        machine.cpu_model,
        machine.memory,
        machine.postgres,
        machine.rustc,
        machine.load_at_start
    ));
    section.notes.push(format!(
        "Why the totals are slower (EXPLAIN ANALYZE): they count and sum every matching row, and \
         the summed columns (total_fee, refunded_fee) are in no index, so every match is read from \
         the table. Unfiltered that is a parallel sequential scan of all {pages} pages. A filter \
         hardly helps: matching rows lie all over the table (orders are stored in creation order, \
         and a status or merchant is spread through time), so the 5% REFUND orders sit on \
         {refund_pages} of the {pages} pages, which a bitmap heap scan visits one by one, and for \
         a merchant's 10% the planner chose the sequential scan when this was written. The page fetches them in a \
         separate request after the list, which never waits for them. A covering index (say on \
         status and on merchant, INCLUDE (total_fee, refunded_fee, status)) would let filtered \
         totals be index-only scans; none is added here."
    ));
    Ok(section)
}

/// The orders, their refunds, the last two days' events and notifications, a
/// few anomalies, then ANALYZE. Everything is a function of the row number, so
/// two runs seed the same shapes.
async fn seed(pool: &PgPool, prefix: &str, orders: i64) -> anyhow::Result<()> {
    // hashint8 spreads row numbers evenly: status, merchant, payer and amount
    // are independent of each other and of time.
    let insert = format!(
        "WITH s AS ( \
           SELECT g, $1 || lpad(g::text, 7, '0') AS no, \
             abs(hashint8(g)::bigint) % 100 AS h, \
             abs(hashint8(g * 3 + 1)::bigint) % 10 AS m, \
             now() - make_interval(secs => (($2 - 1 - g) * {secs}.0 / $2)::float8) AS created, \
             1 + abs(hashint8(-g - 1)::bigint) % 50000 AS fee, \
             'oBench' || lpad((abs(hashint8(g + 7777777)::bigint) % {OPENIDS})::text, 22, '0') AS openid \
           FROM generate_series($3::bigint, $4::bigint - 1) g \
         ), t AS ( \
           SELECT s.*, \
             CASE WHEN h < 85 THEN 'SUCCESS' WHEN h < 90 THEN 'REFUND' \
                  WHEN h < 95 THEN 'CLOSED' ELSE 'NOTPAY' END AS status, \
             h < 90 AS paid, \
             CASE WHEN m < 7 THEN '{m0}' WHEN m < 9 THEN '{m1}' ELSE '{m2}' END AS merchant \
           FROM s \
         ) \
         INSERT INTO orders (out_trade_no, idempotency_key, status, version, openid, description, \
           total_fee, client_ip, sign_type, transaction_id, cash_fee, created_at, updated_at, \
           paid_at, refunded_fee, merchant) \
         SELECT no, 'seed-' || no, status, CASE WHEN paid THEN 2 ELSE 1 END, openid, 'bench', \
           fee, '127.0.0.1', 'MD5', \
           CASE WHEN paid THEN '4200' || lpad(g::text, 24, '0') END, \
           CASE WHEN paid THEN fee END, \
           created, created + interval '30 seconds', \
           CASE WHEN paid THEN created + interval '20 seconds' END, \
           CASE WHEN status = 'REFUND' THEN CASE WHEN g % 2 = 0 THEN fee ELSE fee / 2 + 1 END \
                ELSE 0 END, \
           merchant \
         FROM t",
        secs = DAYS * 86_400,
        m0 = MERCHANTS[0],
        m1 = MERCHANTS[1],
        m2 = MERCHANTS[2],
    );
    let mut lo = 0;
    while lo < orders {
        let hi = (lo + CHUNK).min(orders);
        let t = Instant::now();
        sqlx::query(&insert)
            .bind(prefix)
            .bind(orders)
            .bind(lo)
            .bind(hi)
            .execute(pool)
            .await
            .with_context(|| format!("seeding orders {lo}..{hi}"))?;
        eprintln!(
            "console: orders {lo}..{hi} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        lo = hi;
    }
    let statements = [
        // A refund row for each refunded order; the newest few still PROCESSING.
        "INSERT INTO refunds (out_refund_no, out_trade_no, refund_id, refund_fee, status, reason, \
           created_at, updated_at, succeeded_at) \
         SELECT 'R' || out_trade_no, out_trade_no, '5030' || substr(transaction_id, 5), \
           refunded_fee, CASE WHEN paid_at > now() - interval '2 hours' THEN 'PROCESSING' \
             ELSE 'SUCCESS' END, 'bench', \
           LEAST(paid_at + interval '10 minutes', now()), LEAST(paid_at + interval '10 minutes', now()), \
           CASE WHEN paid_at > now() - interval '2 hours' THEN NULL \
             ELSE LEAST(paid_at + interval '10 minutes', now()) END \
         FROM orders WHERE status = 'REFUND'",
        // The last two days' payments: their outbox event and notification (the dashboard's charts).
        "INSERT INTO order_events (out_trade_no, status, version, transaction_id, total_fee, \
           source, occurred_at, published_at, refunded_fee) \
         SELECT out_trade_no, 'SUCCESS', 2, transaction_id, total_fee, 'NOTIFY', paid_at, \
           paid_at + interval '3 milliseconds', 0 \
         FROM orders WHERE paid_at > now() - interval '2 days'",
        "INSERT INTO notifications (kind, out_trade_no, verdict, raw_body, sign_type, received_at) \
         SELECT 'pay', out_trade_no, 'applied', \
           convert_to('<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>', 'UTF8'), 'MD5', \
           paid_at \
         FROM orders WHERE paid_at > now() - interval '2 days'",
        // A few anomalies (a tenth of them resolved), as a real history has.
        "INSERT INTO anomalies (kind, out_trade_no, detail, occurred_at) \
         SELECT 'amount_mismatch', out_trade_no, 'bench: notified 1 fen', paid_at \
         FROM orders WHERE status = 'SUCCESS' ORDER BY paid_at DESC LIMIT 50",
        "INSERT INTO anomaly_resolutions (anomaly_id, resolved_by, note) \
         SELECT id, 'bench', 'seeded' FROM anomalies WHERE id % 10 = 0",
        "ANALYZE",
    ];
    for sql in statements {
        sqlx::query(sql)
            .execute(pool)
            .await
            .with_context(|| format!("seeding: {}", &sql[..sql.len().min(40)]))?;
    }
    Ok(())
}

/// Signs in through the login form and returns a client that sends the
/// session cookie (and follows no redirect, so a lost session shows as a 303).
async fn sign_in(base: &str, password: &str) -> anyhow::Result<reqwest::Client> {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let reply = plain
        .post(format!("{base}/login"))
        .form(&[
            ("username", OPERATOR),
            ("password", password),
            ("next", "/"),
        ])
        .send()
        .await
        .context("signing in")?;
    if !reply.status().is_redirection() {
        bail!("signing in answered {}", reply.status());
    }
    let cookie_name = console::session::cookie_name(false);
    let cookie = reply
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|c| c.starts_with(&format!("{cookie_name}=")))
        .context("signing in set no session cookie")?
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse()?);
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()?)
}

/// The first row of the orders list under `condition` (the console's order),
/// `offset` rows down.
async fn expected_row(
    pool: &PgPool,
    condition: &str,
    binds: &[&str],
    offset: i64,
) -> anyhow::Result<String> {
    let sql = format!(
        "SELECT out_trade_no FROM orders WHERE {condition} \
         ORDER BY created_at DESC, out_trade_no DESC OFFSET {offset} LIMIT 1"
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_one(pool)
        .await
        .with_context(|| format!("the expected first row where {condition}"))
}

async fn expected_count(pool: &PgPool, condition: &str, binds: &[&str]) -> anyhow::Result<String> {
    let sql = format!("SELECT count(*) FROM orders WHERE {condition}");
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(console::format::count(q.fetch_one(pool).await?))
}

async fn probes(
    pool: &PgPool,
    client: &reqwest::Client,
    base: &str,
    mode: Mode,
    orders: i64,
) -> anyhow::Result<Vec<Probe>> {
    let (n, totals_n, lookups) = match mode {
        Mode::Full => (200, 30, 200),
        Mode::Smoke => (5, 3, 5),
    };
    let merchant = MERCHANTS[2];
    // Five days, forty days back, in the console's days (Beijing time).
    let to_day = console::format::today() - chrono::Duration::days(40);
    let from_day = to_day - chrono::Duration::days(4);
    let from: DateTime<Utc> = console::format::day_start(from_day);
    let to: DateTime<Utc> =
        console::format::day_start(to_day.succ_opt().context("a day after the range")?);
    let range: String = sqlx::query_scalar(
        "SELECT out_trade_no FROM orders WHERE created_at >= $1 AND created_at < $2 \
         ORDER BY created_at DESC, out_trade_no DESC LIMIT 1",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .context("the date range's first row")?;

    // Paid orders to look up, spread over the table.
    let percent = (lookups as f64 * 4.0 * 100.0 / orders as f64).clamp(0.1, 100.0);
    let sampled = sqlx::query(&format!(
        "SELECT out_trade_no, transaction_id, openid FROM orders TABLESAMPLE BERNOULLI ({percent}) \
         WHERE status = 'SUCCESS' LIMIT {lookups}"
    ))
    .fetch_all(pool)
    .await?;
    let mut by_no = Vec::new();
    let mut by_transaction = Vec::new();
    let mut by_openid = Vec::new();
    let mut pages = Vec::new();
    for row in &sampled {
        let no: String = row.try_get("out_trade_no")?;
        let transaction: String = row.try_get("transaction_id")?;
        let openid: String = row.try_get("openid")?;
        let newest = expected_row(pool, "openid = $1", &[&openid], 0).await?;
        by_no.push((format!("/orders?q={no}"), no.clone()));
        by_transaction.push((format!("/orders?q={transaction}"), no.clone()));
        by_openid.push((format!("/orders?q={openid}"), newest));
        pages.push((format!("/orders/{no}"), no));
    }

    // The second page: the link the first page offers, as a browser follows it.
    let first = get_checked(
        client,
        base,
        "/orders",
        &expected_row(pool, "TRUE", &[], 0).await?,
    )
    .await?;
    let next = next_link(&first).context("the first page has no next-page link")?;

    Ok(vec![
        Probe::one(
            "orders, first page",
            "/orders".into(),
            expected_row(pool, "TRUE", &[], 0).await?,
            n,
        ),
        Probe::one(
            "orders, status = REFUND",
            "/orders?status=REFUND".into(),
            expected_row(pool, "status = $1", &["REFUND"], 0).await?,
            n,
        ),
        Probe::one(
            "orders, status = NOTPAY",
            "/orders?status=NOTPAY".into(),
            expected_row(pool, "status = $1", &["NOTPAY"], 0).await?,
            n,
        ),
        Probe::one(
            "orders, merchant (10% of orders)",
            format!("/orders?merchant={merchant}"),
            expected_row(pool, "merchant = $1", &[merchant], 0).await?,
            n,
        ),
        Probe::one(
            "orders, 5-day range 40 days back",
            format!("/orders?from={from_day}&to={to_day}"),
            range,
            n,
        ),
        Probe::many("orders, q = out_trade_no", by_no, n)?,
        Probe::many("orders, q = transaction_id", by_transaction, n)?,
        Probe::many("orders, q = openid (newest of theirs)", by_openid, n)?,
        Probe::one(
            "orders, second page (the next link)",
            next,
            expected_row(pool, "TRUE", &[], i64::from(console::pages::orders::PAGE)).await?,
            n,
        ),
        Probe::one(
            "totals, unfiltered",
            "/orders/totals".into(),
            console::format::count(orders),
            totals_n,
        ),
        Probe::one(
            "totals, status = REFUND",
            "/orders/totals?status=REFUND".into(),
            expected_count(pool, "status = $1", &["REFUND"]).await?,
            totals_n,
        ),
        Probe::one(
            "totals, merchant (10% of orders)",
            format!("/orders/totals?merchant={merchant}"),
            expected_count(pool, "merchant = $1", &[merchant]).await?,
            totals_n,
        ),
        Probe::many("order page", pages, n)?,
        Probe::one("dashboard", "/".into(), "Paid per hour (orders)".into(), n),
    ])
}

/// The first page's "Older orders" link, its HTML escaping undone.
fn next_link(html: &str) -> Option<String> {
    let end = html.find("\" id=\"next-page\"")?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&#x2f;", "/")
            .replace("&#47;", "/"),
    )
}

/// GETs `path` and returns its body, or fails unless it is a 200 holding `expect`.
async fn get_checked(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    expect: &str,
) -> anyhow::Result<String> {
    let reply = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = reply.status();
    let body = reply.text().await?;
    if status != reqwest::StatusCode::OK {
        bail!(
            "GET {path} answered {status}: {}",
            &body[..body.len().min(300)]
        );
    }
    if !body.contains(expect) {
        bail!(
            "GET {path} lacks {expect:?}: {}",
            &body[..body.len().min(600)]
        );
    }
    Ok(body)
}

/// A few warm-up requests, then `iterations` timed ones, each checked.
async fn time_probe(
    client: &reqwest::Client,
    base: &str,
    probe: &Probe,
    mode: Mode,
) -> anyhow::Result<(Summary, usize)> {
    let warm = match mode {
        Mode::Full => (probe.iterations / 10).max(3),
        Mode::Smoke => 1,
    };
    let mut urls = probe.urls.iter().cycle();
    let mut samples = Vec::with_capacity(probe.iterations);
    let mut bytes = 0;
    for i in 0..warm + probe.iterations {
        let (path, expect) = urls.next().context("a probe without URLs")?;
        let t = Instant::now();
        let body = get_checked(client, base, path, expect)
            .await
            .with_context(|| probe.what.clone())?;
        let took = t.elapsed();
        if i >= warm {
            samples.push(took);
            bytes = bytes.max(body.len());
        }
    }
    Ok((summarize(samples), bytes))
}
