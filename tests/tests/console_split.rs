//! The standalone `console` binary beside the split deployment, as
//! docker-compose runs it: users from a file `console add-user` wrote, orders
//! read from Postgres, the live status followed over Redis (through the
//! poller's watch, confirmed against the database), and every change made
//! through payment-service's API with `CONSOLE_API_TOKEN`.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use e2e_tests::{binary, build_binaries, eventually, free_port, Process, Stack, StackOptions};
use reqwest::{header, redirect::Policy, Client, StatusCode};
use tonic::metadata::MetadataValue;
use wxpay_proto::v1::{CreateOrderRequest, GetRefundRequest, RefundStatus};

const TOKEN: &str = "console-split-token-0123456789abcdef";

/// `console add-user NAME --role ROLE` with `stdin` as the password.
fn add_user(users: &std::path::Path, name: &str, role: &str, stdin: &str) -> std::process::Output {
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
        .write_all(stdin.as_bytes())
        .expect("password on stdin");
    child.wait_with_output().expect("add-user ends")
}

fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("client")
}

async fn sign_in(console: &str, name: &str, password: &str) -> Client {
    let client = browser();
    let res = client
        .post(format!("{console}/login"))
        .form(&[("username", name), ("password", password)])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name} signs in");
    client
}

async fn csrf(client: &Client, url: &str) -> String {
    let page = client
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("a form with a CSRF token") + marker.len();
    page[at..at + page[at..].find('"').expect("quote")].to_owned()
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {TOKEN}").parse().expect("header");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_binary_follows_orders_over_redis_and_refunds_through_payment_service() {
    build_binaries().expect("binaries");
    let dir = std::env::temp_dir().join(format!("wxpay-console-split-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    // A v3 merchant: a v2 refund needs a client certificate the sandbox's
    // plain listener does not take (as in the chaos soak).
    let merchants = dir.join("merchants.toml");
    let d = dir.display();
    std::fs::write(
        &merchants,
        format!(
            r#"
[[merchant]]
name = "v3-shop"
api_version = "v3"
app_id = "wx5000000000000500"
mch_id = "1900000500"
apiv3_key = "console-apiv3-key-0123456789abcd"
private_key = "{d}/apiclient_key.pem"
serial_no = "6C2E7F4FAD9183C5BE2F40618CAD2E3F40516273"
wechatpay_public_key = "{d}/pub_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_0119000005002026120700000000"
"#
        ),
    )
    .expect("merchants file");
    let stack = Stack::start(StackOptions {
        api_token: Some(TOKEN.into()),
        merchants_file: Some(merchants),
        ..Default::default()
    })
    .await
    .expect("the split stack starts");

    // Users, written by the CLI: a typed password, and a generated one.
    let users = dir.join("users.toml");
    let out = add_user(&users, "olga", "operator", "olga-password-123\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add_user(&users, "vic", "viewer", "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let vic_password = printed
        .rsplit("password: ")
        .next()
        .map(str::trim)
        .filter(|p| p.len() >= 20)
        .unwrap_or_else(|| panic!("a generated password is printed: {printed}"))
        .to_owned();
    let again = add_user(&users, "olga", "viewer", "another-password-1\n");
    assert!(!again.status.success(), "a name is added once");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let stored = std::fs::read_to_string(&users).expect("users file");
    assert!(
        !stored.contains("olga-password-123"),
        "only the hash is stored"
    );
    assert!(stored.contains("$argon2id$"));

    let port = free_port().expect("port");
    let redis_url = stack
        .env
        .poller
        .iter()
        .find(|(k, _)| *k == "REDIS_URL")
        .map(|(_, v)| v.clone())
        .expect("the poller's REDIS_URL");
    let mut console_process = Process::spawn(
        "console",
        &[
            ("CONSOLE_ADDR", format!("127.0.0.1:{port}")),
            ("CONSOLE_USERS_FILE", users.display().to_string()),
            ("DATABASE_URL", stack.database_url.clone()),
            ("REDIS_URL", redis_url),
            ("PAYMENT_SERVICE_URL", stack.payment_url.clone()),
            ("CONSOLE_API_TOKEN", TOKEN.into()),
            ("CONSOLE_INSECURE_COOKIE", "1".into()),
            ("RUST_LOG", "info".into()),
        ],
    )
    .expect("console starts");
    let console = format!("http://127.0.0.1:{port}");
    eventually("the console answers /healthz", || async {
        Client::new()
            .get(format!("{console}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // An order, watched live in the console before it is paid.
    let mut payments = stack.payments().await.expect("payments");
    let order = payments
        .create_order(authorized(CreateOrderRequest {
            idempotency_key: "console-split-1".into(),
            openid: "oPayer-console-split".into(),
            merchant: "v3-shop".into(),
            description: "console split".into(),
            total_fee: 640,
            client_ip: "127.0.0.1".into(),
            ..Default::default()
        }))
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("order");
    let no = order.out_trade_no.clone();
    let olga = sign_in(&console, "olga", "olga-password-123").await;
    let mut events = olga
        .get(format!("{console}/orders/{no}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), StatusCode::OK);
    let mut sse = Sse::default();
    let first = sse.next(&mut events).await;
    assert_eq!(first["status"], "NOTPAY", "{first}");
    stack
        .sandbox_post(&no, "pay", serde_json::json!({}))
        .await
        .expect("paid in the sandbox");
    let paid = sse.until(&mut events, |e| e["status"] == "SUCCESS").await;
    assert_eq!(paid["total_fee"], 640);

    // The viewer is refused; the operator's refund goes through payment-service.
    let vic = sign_in(&console, "vic", &vic_password).await;
    let vic_token = csrf(&vic, &format!("{console}/")).await;
    let res = vic
        .post(format!("{console}/orders/{no}/refund"))
        .form(&[
            ("csrf", vic_token.as_str()),
            ("refund_fee", "100"),
            ("reason", "x"),
            ("out_refund_no", "VICREFUND1"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let token = csrf(&olga, &format!("{console}/orders/{no}")).await;
    let form = [
        ("csrf", token.as_str()),
        ("refund_fee", "240"),
        ("reason", "one cup was missing"),
        ("out_refund_no", "OLGAREFUND1"),
    ];
    for _ in 0..2 {
        // The same form twice (a double click) is one refund.
        let res = olga
            .post(format!("{console}/orders/{no}/refund"))
            .form(&form)
            .send()
            .await
            .expect("refund");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(res.headers()[header::LOCATION]
            .to_str()
            .expect("location")
            .starts_with(&format!("/orders/{no}?audit=")));
    }
    let refund = payments
        .get_refund(authorized(GetRefundRequest {
            out_refund_no: "OLGAREFUND1".into(),
        }))
        .await
        .expect("the refund exists at payment-service")
        .into_inner();
    assert_eq!(refund.refund_fee, 240);
    assert_eq!(refund.out_trade_no, no);
    assert!(
        payments
            .get_refund(authorized(GetRefundRequest {
                out_refund_no: "VICREFUND1".into(),
            }))
            .await
            .is_err(),
        "the viewer's refund was never asked for"
    );
    stack
        .sandbox_control("/sandbox/refunds/OLGAREFUND1/settle", serde_json::json!({}))
        .await
        .expect("settled");
    let landed = sse.until(&mut events, |e| e["refunded_fee"] == 240).await;
    assert_eq!(landed["status"], "REFUND");
    let refund = payments
        .get_refund(authorized(GetRefundRequest {
            out_refund_no: "OLGAREFUND1".into(),
        }))
        .await
        .expect("refund")
        .into_inner();
    assert_eq!(refund.status, RefundStatus::Success as i32);

    let audit = olga
        .get(format!("{console}/audit"))
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("body");
    assert_eq!(
        audit.matches("class=\"audit-row ok\"").count(),
        2,
        "two refund submissions, one refund: {audit}"
    );
    assert!(audit.contains("refused: viewers cannot act"));
    console_process
        .terminate(Duration::from_secs(10))
        .await
        .expect("the console stops on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads Server-Sent Events' `data:` lines as JSON, keeping what a chunk
/// held beyond the event asked for.
#[derive(Default)]
struct Sse {
    buffer: String,
}

impl Sse {
    async fn next(&mut self, res: &mut reqwest::Response) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).expect("an event is JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, res.chunk())
                .await
                .expect("an event within 15 s")
                .expect("stream")
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn until(
        &mut self,
        res: &mut reqwest::Response,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let event = self.next(res).await;
            if want(&event) {
                return event;
            }
        }
    }
}
