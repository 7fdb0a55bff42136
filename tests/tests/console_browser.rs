//! The operator console in a real browser: headless chromium, driven over
//! WebDriver, against the one-command product binary `wxpay` (SQLite in
//! `./data` of its directory, the sandbox, payment-service, the gateway, the
//! poller and the console in one process), as a person runs it after
//! `cargo run`. Every check is what the page shows a person: text, rows,
//! forms present or absent, a status that changes while the page stays open.
//!
//! The operator's test also saves a screenshot of each page (beside the
//! harness's others, under the target directory); with
//! `CONSOLE_SCREENSHOTS=docs` it copies them into `docs/console/`, which
//! the README shows, so a plain test run leaves the working tree alone.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
    time::Duration,
};

use anyhow::{bail, Context};
use e2e_tests::{
    binary, build_binaries, build_product, free_ports, workspace_root, Browser, Process, PRODUCT,
};
use fantoccini::Locator;
use reqwest::{header, redirect::Policy, StatusCode};
use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions};
use tonic::{metadata::MetadataValue, transport::Channel};
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, CreateOrderRequest, GetOrderRequest, OrderStatus,
};

/// `API_TOKEN` of the product: CreateOrder here, and the console's own
/// actions through payment-service, both carry it.
const TOKEN: &str = "console-browser-token-0123456789abcdef";
/// How long a page may take to show what a test waits for (a notification
/// through the gateway, an SSE event, a slow machine).
const SHOWN_WITHIN: Duration = Duration::from_secs(30);

/// `wxpay` running as a child in a directory of its own (its `./data`),
/// every listener on a free port; the process group is killed on drop.
struct Product {
    process: Process,
    dir: tempfile::TempDir,
    console: String,
    payment: String,
    sandbox: String,
    http: reqwest::Client,
}

impl Product {
    /// Starts `wxpay` and waits for its banner (printed once everything
    /// listens). `users_file`: `CONSOLE_USERS_FILE`; `None`, the product makes
    /// the operator `operator` and prints a one-time password.
    async fn start(users_file: Option<&Path>) -> Self {
        build_product().expect("the wxpay binary builds");
        let dir = tempfile::Builder::new()
            .prefix("wxpay-console-browser-")
            .tempdir()
            .expect("a directory for wxpay");
        let [payment, gateway, gateway_metrics, poller, poller_metrics, poller_http, sandbox, console] =
            free_ports::<8>().expect("free ports");
        let at = |port: u16| format!("127.0.0.1:{port}");
        let mut env = vec![
            ("PAYMENT_ADDR", at(payment)),
            ("GATEWAY_ADDR", at(gateway)),
            ("GATEWAY_METRICS_ADDR", at(gateway_metrics)),
            ("POLLER_ADDR", at(poller)),
            ("POLLER_METRICS_ADDR", at(poller_metrics)),
            ("POLLER_HTTP_ADDR", at(poller_http)),
            ("SANDBOX_ADDR", at(sandbox)),
            ("CONSOLE_ADDR", at(console)),
            ("API_TOKEN", TOKEN.to_owned()),
            // Refunds settle when the test says so (the sandbox's control
            // API), after the page that must show it live has loaded: a
            // refund settled on a timer could land before the page does, and
            // the page would show it without anything live having happened.
            ("SANDBOX_REFUND_SETTLE_MS", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        if let Some(users) = users_file {
            env.push(("CONSOLE_USERS_FILE", users.display().to_string()));
        }
        let mut process = Process::spawn_group_in(PRODUCT, dir.path(), &env).expect("wxpay starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
            if log.contains("Ctrl-C stops everything.") {
                break;
            }
            if let Some(status) = process.exited() {
                panic!(
                    "wxpay exited ({status}) during start-up:\n{}",
                    process.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wxpay printed no banner within 120 s:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            process,
            dir,
            console: format!("http://{}", at(console)),
            payment: format!("http://{}", at(payment)),
            sandbox: format!("http://{}", at(sandbox)),
            http: reqwest::Client::new(),
        }
    }

    /// The console's one-time password from the banner
    /// (`… sign in as operator with the one-time password XXXX`).
    fn printed_password(&self) -> String {
        let log = std::fs::read_to_string(self.process.log_path()).expect("wxpay's output");
        let line = log
            .lines()
            .find(|l| l.trim_start().starts_with("console") && l.contains("one-time password "))
            .unwrap_or_else(|| panic!("the banner names the console's password:\n{log}"));
        let password = line
            .rsplit("one-time password ")
            .next()
            .map(str::trim)
            .unwrap_or_default();
        assert!(password.len() >= 12, "a real password: {line:?}");
        password.to_owned()
    }

    /// The SQLite database the product keeps in `./data`.
    fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("wxpay.db")
    }

    /// Runs one statement on the product's database, beside the running
    /// process (WAL mode: it waits for the process's writer, if any).
    async fn sql(&self, statement: &str, out_trade_no: &str) {
        let mut db =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", self.database().display()))
                .expect("the database's URL")
                .busy_timeout(Duration::from_secs(10))
                .connect()
                .await
                .expect("the product's database");
        let done = sqlx::query(statement)
            .bind(out_trade_no)
            .execute(&mut db)
            .await
            .expect("the statement runs");
        assert_eq!(done.rows_affected(), 1, "{statement} on {out_trade_no}");
    }

    async fn payments(&self) -> PaymentServiceClient<Channel> {
        let channel = Channel::from_shared(self.payment.clone())
            .expect("payment-service's URL")
            .connect()
            .await
            .expect("payment-service answers");
        PaymentServiceClient::new(channel)
    }

    /// CreateOrder through the product's gRPC API, as a shop's backend would.
    async fn create_order(&self, key: &str, openid: &str, fen: i64) -> String {
        let order = self
            .payments()
            .await
            .create_order(authorized(CreateOrderRequest {
                idempotency_key: key.into(),
                openid: openid.into(),
                description: format!("browser test {key}"),
                total_fee: fen,
                client_ip: "127.0.0.1".into(),
                ..Default::default()
            }))
            .await
            .expect("CreateOrder")
            .into_inner()
            .order
            .expect("the order");
        order.out_trade_no
    }

    /// POSTs `body` to the sandbox's control API (`/sandbox/...`).
    async fn sandbox(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let res = self
            .http
            .post(format!("{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await
            .expect("the sandbox answers");
        let status = res.status();
        let text = res.text().await.expect("the sandbox's answer");
        assert!(status.is_success(), "sandbox {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The payer pays `out_trade_no` (WeChat then notifies the gateway).
    async fn pay(&self, out_trade_no: &str) {
        self.sandbox(
            &format!("/sandbox/orders/{out_trade_no}/pay"),
            serde_json::json!({}),
        )
        .await;
    }

    /// Pays an order and waits until payment-service has it as SUCCESS.
    async fn pay_and_wait(&self, out_trade_no: &str) {
        self.pay(out_trade_no).await;
        let mut payments = self.payments().await;
        let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
        loop {
            let order = payments
                .get_order(authorized(GetOrderRequest {
                    out_trade_no: out_trade_no.into(),
                }))
                .await
                .expect("GetOrder")
                .into_inner();
            if order.status == OrderStatus::Success as i32 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{out_trade_no} not paid within {SHOWN_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A payment after a close: the order is closed on our side only (by hand
    /// in the database, as if CloseOrder had reached us but not WeChat), and
    /// then the payer pays it at WeChat.
    async fn pay_after_close(&self, out_trade_no: &str) {
        self.sql(
            "UPDATE orders SET status = 'CLOSED', version = version + 1 WHERE out_trade_no = ?",
            out_trade_no,
        )
        .await;
        self.pay(out_trade_no).await;
    }

    /// SIGTERM, as Ctrl-C: the product stops cleanly.
    async fn stop(mut self) {
        let status = self
            .process
            .terminate(Duration::from_secs(20))
            .await
            .expect("wxpay stops on SIGTERM");
        assert!(status.success(), "wxpay exited with {status}");
    }
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {TOKEN}").parse().expect("header");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Beijing's day whose bill WeChat has ready now (10:00 the next day), and
/// how many days back it is: yesterday from 10:00, the day before until then.
fn ready_bill_day() -> (chrono::NaiveDate, u64) {
    use chrono::Timelike;
    let beijing = chrono::Utc::now() + chrono::Duration::hours(8);
    let days = if beijing.hour() >= 10 { 1 } else { 2 };
    let day = beijing.date_naive() - chrono::Duration::days(days as i64);
    (day, days)
}

/// Saves a screenshot of the whole page (the window grown to its height for
/// the shot, capped), and with `CONSOLE_SCREENSHOTS=docs` copies it to
/// `docs/console/<name>.png` (committed: the README shows them).
async fn document(browser: &Browser, name: &str) {
    let client = browser.client();
    let (width, height) = client.get_window_size().await.expect("the window's size");
    let sizes = client
        .execute(
            "return [window.innerHeight, document.documentElement.scrollHeight];",
            vec![],
        )
        .await
        .expect("the page's height");
    let inner = sizes[0].as_u64().expect("innerHeight");
    let page = sizes[1].as_u64().expect("scrollHeight");
    // The window is taller than what it shows (its frame); keep that.
    let frame = height.saturating_sub(inner);
    let tall = (page + frame).clamp(height, 2400);
    let size = |n: u64| u32::try_from(n).expect("a window size");
    client
        .set_window_size(size(width), size(tall))
        .await
        .expect("grow the window");
    let shot = browser.screenshot(name).await;
    client
        .set_window_size(size(width), size(height))
        .await
        .expect("restore the window");
    let shot = shot.expect("a screenshot");
    if std::env::var("CONSOLE_SCREENSHOTS").as_deref() != Ok("docs") {
        return;
    }
    let docs = workspace_root().join("docs").join("console");
    std::fs::create_dir_all(&docs).expect("docs/console");
    std::fs::copy(&shot, docs.join(format!("{name}.png"))).expect("copied into docs/console");
}

/// Loads `url` again and again until the element at `css` shows `needle`
/// (a page that shows what the server knew when it was loaded).
async fn until_shown(browser: &Browser, url: &str, css: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    loop {
        browser.goto(url).await.expect("the page loads");
        match browser.text(css).await {
            Ok(text) if text.contains(needle) => return text,
            last => assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: {css} never showed {needle:?}; last {last:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `attribute` and visible text of every element at `css`.
async fn elements(browser: &Browser, css: &str, attribute: &str) -> Vec<(String, String)> {
    let found = browser
        .client()
        .find_all(Locator::Css(css))
        .await
        .expect("find_all");
    let mut out = Vec::with_capacity(found.len());
    for element in found {
        let value = element
            .attr(attribute)
            .await
            .expect("an attribute")
            .unwrap_or_default();
        out.push((value, element.text().await.expect("its text")));
    }
    out
}

/// The `class` and the cells' texts of every table row at `css`.
async fn table_rows(browser: &Browser, css: &str) -> Vec<(String, Vec<String>)> {
    let mut rows = Vec::new();
    for tr in browser
        .client()
        .find_all(Locator::Css(css))
        .await
        .expect("rows")
    {
        let class = tr.attr("class").await.expect("class").unwrap_or_default();
        let mut cells = Vec::new();
        for td in tr.find_all(Locator::Css("td")).await.expect("cells") {
            cells.push(td.text().await.expect("a cell's text"));
        }
        rows.push((class, cells));
    }
    rows
}

/// The value of the first element at `css`'s `attribute`.
async fn attribute(browser: &Browser, css: &str, attribute: &str) -> String {
    browser
        .client()
        .find(Locator::Css(css))
        .await
        .with_context(|| format!("no {css}"))
        .expect("the element")
        .attr(attribute)
        .await
        .expect("the attribute")
        .unwrap_or_default()
}

/// Marks the loaded page; [`still_marked`] then tells whether the browser is
/// still on that very page (no reload, no navigation since).
async fn mark_page(browser: &Browser) {
    browser
        .client()
        .execute("window.__e2eMark = 'not reloaded'; return true;", vec![])
        .await
        .expect("script");
}

async fn still_marked(browser: &Browser) -> bool {
    browser
        .client()
        .execute("return window.__e2eMark || null;", vec![])
        .await
        .expect("script")
        == serde_json::json!("not reloaded")
}

/// Clicks a link or a GET form's button, and waits until the browser is at
/// an address containing `to`: a click may return before the navigation it
/// starts, and the old page must not be read as the new one.
async fn click_to(browser: &Browser, css: &str, to: &str) {
    browser.click(css).await.expect("click");
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    loop {
        let url = browser.current_url().await.expect("the address");
        if url.contains(to) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "clicking {css} did not lead to {to:?}: still at {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in on the login page the browser is at.
async fn sign_in(browser: &Browser, name: &str, password: &str) -> anyhow::Result<()> {
    browser.fill("#login input[name=username]", name).await?;
    browser
        .fill("#login input[name=password]", password)
        .await?;
    browser.click("#login button[type=submit]").await
}

/// The rows the orders page lists, by order number.
async fn listed_orders(browser: &Browser) -> Vec<String> {
    let mut rows: Vec<String> = elements(browser, "#orders tr.order-row", "data-order")
        .await
        .into_iter()
        .map(|(no, _)| no)
        .collect();
    rows.sort();
    rows
}

/// Searches the orders page for `q` as a person types it in the search box.
async fn search(browser: &Browser, console: &str, q: &str) -> Vec<String> {
    browser
        .goto(&format!("{console}/orders"))
        .await
        .expect("orders");
    browser
        .fill("#search input[name=q]", q)
        .await
        .expect("type");
    // The form's address, as the browser writes it (`q=` and the value).
    click_to(browser, "#search button[type=submit]", "/orders?q=").await;
    listed_orders(browser).await
}

/// The anomaly row of `out_trade_no`'s on the page: its element id.
async fn anomaly_of(browser: &Browser, out_trade_no: &str) -> Option<String> {
    elements(browser, "#anomalies tr.anomaly", "id")
        .await
        .into_iter()
        .find(|(_, text)| text.contains(out_trade_no))
        .map(|(id, _)| id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_searches_refunds_live_resolves_an_anomaly_reconciles_a_bill_and_is_audited(
) {
    let product = Product::start(None).await;
    let password = product.printed_password();
    let console = product.console.clone();
    let browser = Browser::start().await.expect("a browser");

    // 1. Signing in: a page asked for first leads to the sign-in form; a
    // wrong password is said so and stays there; the right one goes on.
    browser.goto(&format!("{console}/")).await.expect("console");
    assert!(
        browser
            .current_url()
            .await
            .expect("url")
            .starts_with(&format!("{console}/login")),
        "signed out, the console asks who you are"
    );
    document(&browser, "login").await;
    sign_in(&browser, "operator", "not-the-password-at-all")
        .await
        .expect("submit");
    browser
        .wait_for_text("#login-error", "Wrong name or password", SHOWN_WITHIN)
        .await
        .expect("the wrong password is said so");
    assert!(browser
        .current_url()
        .await
        .expect("url")
        .starts_with(&format!("{console}/login")));
    sign_in(&browser, "operator", &password)
        .await
        .expect("submit");
    browser
        .wait_for_text("h1", "Dashboard", SHOWN_WITHIN)
        .await
        .expect("the dashboard after signing in");
    assert_eq!(
        browser.current_url().await.expect("url"),
        format!("{console}/")
    );
    assert_eq!(browser.text("#who").await.expect("who"), "operator");

    // 2. Orders, placed through the API as a shop would, two paid by WeChat.
    let refunded = product.create_order("alice-1", "oBrowserAlice", 1000).await;
    let paid = product.create_order("bob-1", "oBrowserBob", 2500).await;
    let unpaid = product.create_order("alice-2", "oBrowserAlice", 880).await;
    let closed = product.create_order("carol-1", "oBrowserCarol", 1288).await;
    let billed = product.create_order("dave-1", "oBrowserDave", 666).await;
    for no in [&refunded, &paid, &billed] {
        product.pay_and_wait(no).await;
    }
    assert_eq!(
        search(&browser, &console, &refunded).await,
        vec![refunded.clone()],
        "an order number finds that order"
    );
    let mut alices = vec![refunded.clone(), unpaid.clone()];
    alices.sort();
    assert_eq!(
        search(&browser, &console, "oBrowserAlice").await,
        alices,
        "an openid finds that payer's orders"
    );
    // The totals of the same search, filled in by the page's script.
    let totals = browser
        .wait_for_text("#totals", "2 orders", SHOWN_WITHIN)
        .await
        .expect("the search's totals");
    assert!(totals.contains("¥18.80 in all"), "{totals}");
    assert!(totals.contains("1 paid, ¥10.00"), "{totals}");
    click_to(
        &browser,
        &format!("#orders a[href=\"/orders/{refunded}\"]"),
        &format!("/orders/{refunded}"),
    )
    .await;
    assert_eq!(
        browser.text("#status").await.expect("status"),
        "SUCCESS",
        "the order's status"
    );
    assert_eq!(browser.text("#amount").await.expect("amount"), "¥10.00");
    let timeline = browser.text("#timeline").await.expect("timeline");
    for step in ["Placed: ¥10.00", "Notification (", "Status SUCCESS"] {
        assert!(
            timeline.contains(step),
            "{step:?} in the timeline: {timeline}"
        );
    }

    // 3. A partial refund from the order's form. The page it comes back to
    // says it was accepted; when WeChat settles it, that same page turns
    // REFUND and shows the amount back with the payer, without a reload.
    let out_refund_no =
        attribute(&browser, "#refund-form input[name=out_refund_no]", "value").await;
    browser
        .fill("#refund-form input[name=refund_fee]", "300")
        .await
        .expect("amount");
    browser
        .fill("#refund-form input[name=reason]", "one cup was missing")
        .await
        .expect("reason");
    browser
        .click("#refund-form button[type=submit]")
        .await
        .expect("refund");
    let flash = browser
        .wait_for_text("#flash", "accepted", SHOWN_WITHIN)
        .await
        .expect("the refund's result");
    assert!(flash.contains(&out_refund_no), "{flash}");
    browser
        .wait_for_text("#live-state", "live", SHOWN_WITHIN)
        .await
        .expect("the page follows the order");
    assert_eq!(browser.text("#refunded").await.expect("refunded"), "¥0.00");
    mark_page(&browser).await;
    product
        .sandbox(
            &format!("/sandbox/refunds/{out_refund_no}/settle"),
            serde_json::json!({}),
        )
        .await;
    browser
        .wait_for_text("#status", "REFUND", SHOWN_WITHIN)
        .await
        .expect("the status turns REFUND live");
    browser
        .wait_for_text("#refunded", "¥3.00", SHOWN_WITHIN)
        .await
        .expect("the refunded amount shows live");
    browser
        .wait_for_text("#timeline", "back with the payer", SHOWN_WITHIN)
        .await
        .expect("the timeline follows");
    assert!(still_marked(&browser).await, "the page was not reloaded");
    document(&browser, "order").await;

    // 4. An unpaid order's page, open while the payer pays.
    browser
        .goto(&format!("{console}/orders/{unpaid}"))
        .await
        .expect("the unpaid order");
    browser
        .wait_for_text("#live-state", "live", SHOWN_WITHIN)
        .await
        .expect("the page follows the order");
    assert_eq!(browser.text("#status").await.expect("status"), "NOTPAY");
    mark_page(&browser).await;
    product.pay(&unpaid).await;
    browser
        .wait_for_text("#status", "SUCCESS", SHOWN_WITHIN)
        .await
        .expect("the status turns SUCCESS live");
    assert!(still_marked(&browser).await, "the page was not reloaded");
    assert!(!browser
        .text("#transaction")
        .await
        .expect("transaction")
        .is_empty());

    // 5. A payment after a close is an anomaly, with what to do about it;
    // the operator resolves it with a note.
    product.pay_after_close(&closed).await;
    until_shown(
        &browser,
        &format!("{console}/anomalies"),
        "#anomalies",
        &closed,
    )
    .await;
    let row = anomaly_of(&browser, &closed)
        .await
        .expect("the anomaly is listed");
    let line = browser.text(&format!("#{row}")).await.expect("the row");
    assert!(line.contains("paid_after_close"), "{line}");
    assert!(
        line.contains("The customer paid a closed order"),
        "its advice: {line}"
    );
    document(&browser, "anomalies").await;
    let note = "called the payer: goods shipped after all";
    browser
        .fill(&format!("#{row} input[name=note]"), note)
        .await
        .expect("note");
    browser
        .click(&format!("#{row} button[type=submit]"))
        .await
        .expect("resolve");
    browser
        .wait_for_text("#flash", "resolved", SHOWN_WITHIN)
        .await
        .expect("the result");
    assert!(browser
        .text(&format!("#{row} .resolved-by"))
        .await
        .expect("who")
        .starts_with("resolved by operator at "));
    assert_eq!(
        browser
            .text(&format!("#{row} .note"))
            .await
            .expect("the note"),
        note
    );
    browser
        .goto(&format!("{console}/anomalies?state=open"))
        .await
        .expect("open anomalies");
    assert_eq!(anomaly_of(&browser, &closed).await, None, "no longer open");

    // 6. The bill of the last day WeChat has one for, holding one payment
    // (moved into that day on both sides), reconciled from its page.
    let (day, days) = ready_bill_day();
    let seconds = 86_400 * days;
    product
        .sandbox(
            &format!("/sandbox/orders/{billed}/age"),
            serde_json::json!({ "seconds": seconds }),
        )
        .await;
    product
        .sql(
            &format!(
                "UPDATE orders SET created_at = created_at - {ms}, paid_at = paid_at - {ms} \
                 WHERE out_trade_no = ?",
                ms = seconds * 1000
            ),
            &billed,
        )
        .await;
    let compact = day.format("%Y%m%d").to_string();
    let label = day.format("%Y-%m-%d").to_string();
    browser
        .goto(&format!("{console}/bills"))
        .await
        .expect("bills");
    click_to(
        &browser,
        &format!("#bills a[href=\"/bills/{compact}\"]"),
        &format!("/bills/{compact}"),
    )
    .await;
    assert_eq!(
        browser.text("h1").await.expect("title"),
        format!("Bill of {label}")
    );
    assert_eq!(
        browser.text("#not-reconciled").await.expect("state"),
        "This day has not been reconciled yet."
    );
    browser
        .click("#reconcile-form button[type=submit]")
        .await
        .expect("reconcile");
    let flash = browser
        .wait_for_text("#flash", "1 row at WeChat", SHOWN_WITHIN)
        .await
        .expect("the reconciliation's result");
    assert!(
        flash.contains("1 matched, 0 repaired, 0 discrepancies"),
        "{flash}"
    );
    assert_eq!(browser.text("#wechat-rows").await.expect("rows"), "1");
    assert_eq!(browser.text("#matched").await.expect("matched"), "1");
    assert_eq!(
        browser.text("#all-matched").await.expect("verdict"),
        "Every row matched."
    );
    document(&browser, "bill").await;
    browser
        .goto(&format!("{console}/bills"))
        .await
        .expect("bills");
    let days_listed = table_rows(&browser, "#bills tr.bill-row").await;
    let (_, cells) = days_listed
        .iter()
        .find(|(_, cells)| cells.first() == Some(&label))
        .expect("the day is listed");
    assert_eq!(
        cells[1..5],
        ["1", "1", "0", "0"],
        "rows at WeChat, matched, repaired, discrepancies"
    );
    document(&browser, "bills").await;

    // The refunds page lists the settled refund.
    browser
        .goto(&format!("{console}/refunds"))
        .await
        .expect("refunds");
    let refunds = elements(&browser, "#refunds tr.refund-row", "class").await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let refund = &refunds[0].1;
    for part in [
        out_refund_no.as_str(),
        refunded.as_str(),
        "¥3.00",
        "SUCCESS",
        "one cup was missing",
    ] {
        assert!(refund.contains(part), "{part:?} in {refund}");
    }
    document(&browser, "refunds").await;

    // 7. The audit log: the refund, the resolution and the reconciliation,
    // each with who did it and how it ended.
    browser
        .goto(&format!("{console}/audit"))
        .await
        .expect("audit");
    let audited = table_rows(&browser, "#audit tr.audit-row").await;
    let find = |action: &str, target: &str| {
        audited
            .iter()
            .find(|(_, c)| c.len() == 7 && c[3] == action && c[4] == target)
            .unwrap_or_else(|| panic!("{action} of {target} in the audit log: {audited:?}"))
    };
    let (class, cells) = find("refund", &refunded);
    assert!(class.ends_with(" ok"), "{class}");
    assert_eq!(cells[2], "operator operator", "who and their role");
    assert!(cells[6].contains("accepted"), "{cells:?}");
    let anomaly_id = row.trim_start_matches("anomaly-");
    let (class, cells) = find("resolve", &format!("anomaly {anomaly_id}"));
    assert!(class.ends_with(" ok"), "{class}");
    assert_eq!(cells[2], "operator operator");
    assert!(cells[5].contains(note), "{cells:?}");
    let (class, cells) = find("reconcile", &compact);
    assert!(class.ends_with(" ok"), "{class}");
    assert_eq!(cells[2], "operator operator");
    document(&browser, "audit").await;

    // Every order, and the dashboard with nothing left open.
    browser
        .goto(&format!("{console}/orders"))
        .await
        .expect("orders");
    let mut all = vec![
        refunded.clone(),
        paid.clone(),
        unpaid.clone(),
        closed.clone(),
        billed.clone(),
    ];
    all.sort();
    assert_eq!(listed_orders(&browser).await, all);
    browser
        .wait_for_text("#totals", "5 orders", SHOWN_WITHIN)
        .await
        .expect("the totals");
    document(&browser, "orders").await;
    browser
        .goto(&format!("{console}/"))
        .await
        .expect("dashboard");
    assert_eq!(
        browser.text("#open-anomalies").await.expect("anomalies"),
        "0",
        "nothing needs a person"
    );
    let paid_total = browser.text("#paid-total").await.expect("paid");
    assert!(
        paid_total.starts_with('¥') && paid_total != "¥0.00",
        "{paid_total}"
    );
    document(&browser, "dashboard").await;

    // Signing out ends the session: the console asks who you are again.
    click_to(&browser, "form[action=\"/logout\"] button", "/login").await;
    browser
        .goto(&format!("{console}/orders"))
        .await
        .expect("orders");
    assert!(browser
        .current_url()
        .await
        .expect("url")
        .starts_with(&format!("{console}/login")));

    browser.close().await.expect("the browser closes");
    product.stop().await;
}

/// `console add-user NAME --role ROLE`, the password on stdin.
fn add_user(users: &Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(binary("console"))
        .args(["add-user", name, "--role", role])
        .env_clear()
        .env("CONSOLE_USERS_FILE", users)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("console add-user runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("the password on stdin");
    let out = child.wait_with_output().expect("add-user ends");
    assert!(
        out.status.success(),
        "add-user {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hand-made POST with the browser's session cookie and its CSRF token:
/// what the page would send, were the form there.
async fn post_as(
    browser: &Browser,
    url: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<StatusCode> {
    let cookies = browser.client().get_all_cookies().await?;
    let cookie = cookies
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ");
    if cookie.is_empty() {
        bail!("the browser holds no cookie");
    }
    let csrf = attribute(browser, "input[name=csrf]", "value").await;
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend_from_slice(form);
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()?;
    let res = client
        .post(url)
        .header(header::COOKIE, cookie)
        .form(&fields)
        .send()
        .await?;
    Ok(res.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_action_forms_and_a_hand_made_post_with_their_session_is_refused() {
    build_binaries().expect("the console binary builds");
    let users_dir = tempfile::tempdir().expect("a directory for the users file");
    let users = users_dir.path().join("users.toml");
    add_user(&users, "olga", "operator", "olga-password-123");
    add_user(&users, "vic", "viewer", "vic-password-12345");
    let product = Product::start(Some(&users)).await;
    let console = product.console.clone();

    let order = product
        .create_order("viewer-1", "oBrowserViewer", 990)
        .await;
    product.pay_and_wait(&order).await;
    let closed = product
        .create_order("viewer-2", "oBrowserViewer", 1200)
        .await;
    product.pay_after_close(&closed).await;

    let browser = Browser::start().await.expect("a browser");
    browser
        .goto(&format!("{console}/orders/{order}"))
        .await
        .expect("the order");
    sign_in(&browser, "vic", "vic-password-12345")
        .await
        .expect("submit");
    // Back to the page asked for, as a viewer.
    browser
        .wait_for_text("#status", "SUCCESS", SHOWN_WITHIN)
        .await
        .expect("the order, after signing in");
    assert_eq!(
        browser.current_url().await.expect("url"),
        format!("{console}/orders/{order}")
    );
    assert_eq!(browser.text("#who").await.expect("who"), "vic");
    assert_eq!(
        browser.text("#viewer-note").await.expect("note"),
        "You can look but not act: your role is viewer."
    );
    let forms = elements(&browser, "#refund-form, #query-form, #close-form", "id").await;
    assert!(forms.is_empty(), "no action for a viewer: {forms:?}");
    browser.screenshot("viewer-order").await.expect("shot");

    until_shown(
        &browser,
        &format!("{console}/anomalies"),
        "#anomalies",
        &closed,
    )
    .await;
    let row = anomaly_of(&browser, &closed)
        .await
        .expect("the anomaly is listed");
    assert_eq!(
        browser
            .text(&format!("#{row} .open-label"))
            .await
            .expect("its state"),
        "open"
    );
    let forms = elements(&browser, "form.resolve", "action").await;
    assert!(forms.is_empty(), "no resolve form for a viewer: {forms:?}");

    let (day, _) = ready_bill_day();
    let compact = day.format("%Y%m%d").to_string();
    browser
        .goto(&format!("{console}/bills/{compact}"))
        .await
        .expect("a bill day");
    assert!(browser.text("#not-reconciled").await.is_ok());
    let forms = elements(&browser, "#reconcile-form", "id").await;
    assert!(
        forms.is_empty(),
        "no reconcile form for a viewer: {forms:?}"
    );

    // What the forms would have sent, sent by hand with the viewer's own
    // session and CSRF token: refused, and nothing happens.
    let refused = post_as(
        &browser,
        &format!("{console}/orders/{order}/refund"),
        &[
            ("refund_fee", "100"),
            ("reason", "a viewer tries"),
            ("out_refund_no", "VIEWERREFUND1"),
        ],
    )
    .await
    .expect("the POST is answered");
    assert_eq!(refused, StatusCode::FORBIDDEN);
    let anomaly_id = row.trim_start_matches("anomaly-");
    let refused = post_as(
        &browser,
        &format!("{console}/anomalies/{anomaly_id}/resolve"),
        &[("note", "a viewer tries")],
    )
    .await
    .expect("the POST is answered");
    assert_eq!(refused, StatusCode::FORBIDDEN);
    let refused = post_as(
        &browser,
        &format!("{console}/bills/{compact}/reconcile"),
        &[],
    )
    .await
    .expect("the POST is answered");
    assert_eq!(refused, StatusCode::FORBIDDEN);

    browser
        .goto(&format!("{console}/orders/{order}"))
        .await
        .expect("the order");
    assert_eq!(browser.text("#refunded").await.expect("refunded"), "¥0.00");
    assert_eq!(browser.text("#status").await.expect("status"), "SUCCESS");
    browser
        .goto(&format!("{console}/anomalies"))
        .await
        .expect("anomalies");
    assert_eq!(
        anomaly_of(&browser, &closed).await.as_deref(),
        Some(row.as_str()),
        "still open"
    );
    browser
        .goto(&format!("{console}/audit"))
        .await
        .expect("audit");
    let refusals: Vec<String> = elements(&browser, "#audit tr.audit-row.bad", "id")
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    for text in &refusals {
        assert!(text.contains("vic viewer"), "{text}");
        assert!(text.contains("refused: viewers cannot act"), "{text}");
    }
    browser.screenshot("viewer-audit").await.expect("shot");

    browser.close().await.expect("the browser closes");
    product.stop().await;
}
