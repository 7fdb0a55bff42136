//! The operator console over HTTP, without a browser: signing in, the rules
//! every action passes (a session, its CSRF token, the operator role), the
//! audit log, and the live status stream. The stack is the embedded one
//! (SQLite, the in-process bus) with the console on a free port.

use std::{path::PathBuf, time::Duration};

use console::users::{add_user, NewUser, Role};
use reqwest::{header, redirect::Policy, Client, StatusCode};
use wxpay::{settings::ConsoleSettings, Settings, Stack};
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, CreateOrderRequest, GetOrderRequest,
};

const OPERATOR_PASSWORD: &str = "operator-password-1";
const VIEWER_PASSWORD: &str = "viewer-password-12";

/// A directory of its own per test (SQLite file, users file), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("wxpay-console-test-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &TempDir) -> (Stack, String) {
    let users = dir.0.join("users.toml");
    for (name, role, password) in [
        ("olga", Role::Operator, OPERATOR_PASSWORD),
        ("vera", Role::Viewer, VIEWER_PASSWORD),
    ] {
        add_user(
            &users,
            &NewUser {
                name: name.into(),
                role,
                merchants: None,
                password: password.into(),
            },
        )
        .expect("users file");
    }
    let settings = Settings {
        console: Some(ConsoleSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            users_file: Some(users),
        }),
        ..Settings::ephemeral(dir.0.join("wxpay.db"))
    };
    let stack = Stack::start(settings).await.expect("the stack starts");
    let console = format!(
        "http://{}",
        stack.addresses().console.expect("the console is served")
    );
    (stack, console)
}

/// A browser-like client: keeps cookies, does not follow redirects (the
/// tests look at them).
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
        .form(&[("username", name), ("password", password), ("next", "/")])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name} signs in");
    client
}

/// The CSRF token the page's forms carry.
async fn csrf(client: &Client, url: &str) -> String {
    let page = client
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

async fn paid_order(stack: &Stack, key: &str, fen: i64) -> String {
    let mut payments = PaymentServiceClient::connect(stack.addresses().payment_url())
        .await
        .expect("payment-service");
    let order = payments
        .create_order(CreateOrderRequest {
            idempotency_key: key.into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "console test".into(),
            total_fee: fen,
            client_ip: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("order");
    let res = Client::new()
        .post(format!(
            "{}/sandbox/orders/{}/pay",
            stack.addresses().sandbox_url(),
            order.out_trade_no
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("sandbox");
    assert!(res.status().is_success());
    for _ in 0..100 {
        let o = payments
            .get_order(GetOrderRequest {
                out_trade_no: order.out_trade_no.clone(),
            })
            .await
            .expect("GetOrder")
            .into_inner();
        if o.status == wxpay_proto::v1::OrderStatus::Success as i32 {
            return order.out_trade_no;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the order was not paid within 5 s");
}

async fn refunded_fee(stack: &Stack, out_trade_no: &str) -> (i64, usize) {
    let no = wxpay_core::domain::OutTradeNo::parse(out_trade_no).expect("number");
    let refunds = stack.store().refunds_of(&no).await.expect("refunds");
    (
        refunds.iter().map(|r| r.refund_fee.fen()).sum(),
        refunds.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_a_session_sends_to_sign_in_and_a_wrong_password_sets_nothing() {
    let dir = TempDir::new();
    let (stack, console) = start(&dir).await;
    let client = browser();

    let res = client
        .get(format!("{console}/orders?q=x"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/login?next=/orders%3Fq%3Dx",
        "back to the page after signing in"
    );

    let res = client
        .post(format!("{console}/login"))
        .form(&[
            ("username", "olga"),
            ("password", "not her password"),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers().get(header::SET_COOKIE).is_none(),
        "no session for a wrong password"
    );
    let page = res.text().await.expect("body");
    assert!(page.contains("Wrong name or password"), "{page}");
    assert!(page.contains("name=\"password\""), "the form again");

    let res = client
        .post(format!("{console}/login"))
        .form(&[
            ("username", "olga"),
            ("password", OPERATOR_PASSWORD),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/",
        "never off to another site"
    );
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("olga"), "the cookie is sealed: {cookie}");
    let res = client
        .get(format!("{console}/"))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("body");
    assert!(page.contains("Dashboard") && page.contains("olga"));
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_quick_sign_in_attempt_is_held_back_even_with_the_right_password() {
    let dir = TempDir::new();
    let (stack, console) = start(&dir).await;
    let client = browser();
    for _ in 0..5 {
        let res = client
            .post(format!("{console}/login"))
            .form(&[("username", "olga"), ("password", "guess guess guess")])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = client
        .post(format!("{console}/login"))
        .form(&[("username", "olga"), ("password", OPERATOR_PASSWORD)])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signed_in_operator_with_the_forms_token_can_refund_and_every_try_is_audited() {
    let dir = TempDir::new();
    let (stack, console) = start(&dir).await;
    let no = paid_order(&stack, "console-refund", 500).await;
    let order_url = format!("{console}/orders/{no}");
    let refund_url = format!("{order_url}/refund");
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("refund_fee", "120".to_owned()),
            ("reason", "damaged in transit".to_owned()),
        ]
    };

    // No session at all.
    let res = browser()
        .post(&refund_url)
        .form(&form(""))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A viewer with a valid token of their own.
    let viewer = sign_in(&console, "vera", VIEWER_PASSWORD).await;
    let viewer_page = viewer
        .get(&order_url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(
        viewer_page.contains("id=\"viewer-note\""),
        "a viewer sees no action forms"
    );
    assert!(!viewer_page.contains("id=\"refund-form\""));
    let viewer_token = csrf(&viewer, &format!("{console}/")).await;
    let res = viewer
        .post(&refund_url)
        .form(&form(&viewer_token))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // An operator without the token, and with someone else's.
    let operator = sign_in(&console, "olga", OPERATOR_PASSWORD).await;
    let res = operator
        .post(&refund_url)
        .form(&form(""))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = operator
        .post(&refund_url)
        .form(&form(&viewer_token))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refunded_fee(&stack, &no).await,
        (0, 0),
        "nothing was refunded"
    );

    // The operator with their form's token, first with an amount in yuan:
    // refused with the reason, nothing asked of WeChat, and audited.
    let token = csrf(&operator, &order_url).await;
    let res = operator
        .post(&refund_url)
        .form(&[
            ("csrf", token.as_str()),
            ("refund_fee", "1.20"),
            ("reason", "damaged in transit"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = res.text().await.expect("body");
    assert!(body.contains("whole number of fen"), "{body}");
    assert_eq!(refunded_fee(&stack, &no).await, (0, 0));
    let res = operator
        .post(&refund_url)
        .form(&form(&token))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = res.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(back.starts_with(&format!("/orders/{no}?audit=")), "{back}");
    assert_eq!(
        refunded_fee(&stack, &no).await,
        (120, 1),
        "one refund of 120 fen asked for"
    );
    let page = operator
        .get(format!("{console}{back}"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(page.contains("accepted"), "the result is shown: {page}");
    assert!(
        page.contains("refund by olga in the console"),
        "the action is in the order's history"
    );

    // The audit log: the four refusals (the unsigned one has no one to name),
    // the amount in yuan and the refund, newest first.
    let audit = operator
        .get(format!("{console}/audit"))
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("body");
    assert_eq!(
        audit.matches("class=\"audit-row bad\"").count(),
        4,
        "{audit}"
    );
    assert_eq!(
        audit.matches("class=\"audit-row ok\"").count(),
        1,
        "{audit}"
    );
    assert!(audit.contains("refused: viewers cannot act"));
    assert!(audit.contains("refused: refund_fee must be a whole number of fen"));
    assert!(
        audit.contains("refused: the form&#39;s CSRF token is missing or stale")
            || audit.contains("CSRF token is missing or stale")
    );
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_page_streams_its_status_and_the_refund_landing() {
    let dir = TempDir::new();
    let (stack, console) = start(&dir).await;
    let no = paid_order(&stack, "console-live", 300).await;
    let operator = sign_in(&console, "olga", OPERATOR_PASSWORD).await;
    let mut events = operator
        .get(format!("{console}/orders/{no}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), StatusCode::OK);
    let first = next_event(&mut events).await;
    assert_eq!(first["status"], "SUCCESS", "{first}");
    assert_eq!(first["refunded_fee"], 0);

    let token = csrf(&operator, &format!("{console}/orders/{no}")).await;
    let res = operator
        .post(format!("{console}/orders/{no}/refund"))
        .form(&[
            ("csrf", token.as_str()),
            ("refund_fee", "100"),
            ("reason", "late"),
        ])
        .send()
        .await
        .expect("refund");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, refunds) = refunded_fee(&stack, &no).await;
    assert_eq!(refunds, 1);
    let refund_no = stack
        .store()
        .refunds_of(&wxpay_core::domain::OutTradeNo::parse(&no).expect("no"))
        .await
        .expect("refunds")[0]
        .out_refund_no
        .to_string();
    let res = Client::new()
        .post(format!(
            "{}/sandbox/refunds/{refund_no}/settle",
            stack.addresses().sandbox_url()
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("settle");
    assert!(res.status().is_success(), "{}", res.status());
    let landed = next_event(&mut events).await;
    assert_eq!(landed["refunded_fee"], 100, "{landed}");
    assert_eq!(landed["status"], "REFUND");

    // Outside the session the stream is not served.
    let res = browser()
        .get(format!("{console}/orders/{no}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    stack.stop().await.expect("stop");
}

/// The next `data:` line of a Server-Sent Events response, as JSON.
async fn next_event(res: &mut reqwest::Response) -> serde_json::Value {
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(at) = buffer.find("data:") {
            if let Some(end) = buffer[at..].find('\n') {
                let line = buffer[at + 5..at + end].trim().to_owned();
                return serde_json::from_str(&line).expect("an event is JSON");
            }
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The status of `GET /` for `client`'s session: 200 signed in, 303 not.
async fn home_status(client: &Client, console: &str) -> StatusCode {
    client
        .get(format!("{console}/"))
        .send()
        .await
        .expect("get")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_in_the_users_file_ends_the_sessions_opened_with_the_old_one() {
    let dir = TempDir::new();
    let (stack, console) = start(&dir).await;
    let olga = sign_in(&console, "olga", OPERATOR_PASSWORD).await;
    let vera = sign_in(&console, "vera", VIEWER_PASSWORD).await;
    assert_eq!(home_status(&vera, &console).await, StatusCode::OK);

    // Vera's password is changed in the file (a new hash, as add-user makes
    // it); Olga's entry is left as it was.
    const NEW_PASSWORD: &str = "viewer-password-new-1";
    let scratch = dir.0.join("scratch.toml");
    add_user(
        &scratch,
        &NewUser {
            name: "vera".into(),
            role: Role::Viewer,
            merchants: None,
            password: NEW_PASSWORD.into(),
        },
    )
    .expect("scratch users file");
    let hash_of = |text: &str| -> String {
        let table: toml::Table = text.parse().expect("users TOML");
        table["user"]
            .as_array()
            .expect("[[user]]")
            .iter()
            .find(|u| u["name"].as_str() == Some("vera"))
            .and_then(|u| u["password_hash"].as_str())
            .expect("vera's hash")
            .to_owned()
    };
    let users_file = dir.0.join("users.toml");
    let text = std::fs::read_to_string(&users_file).expect("users file");
    let old = hash_of(&text);
    let new = hash_of(&std::fs::read_to_string(&scratch).expect("scratch"));
    assert_ne!(old, new);
    std::fs::write(&users_file, text.replace(&old, &new)).expect("rewrite the users file");

    // The console reads the file again within a few seconds; from then on
    // Vera's old session is sent to sign in, Olga's still works.
    let mut ended = false;
    for _ in 0..100 {
        if home_status(&vera, &console).await == StatusCode::SEE_OTHER {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "the session opened with the old password still works"
    );
    assert_eq!(
        home_status(&olga, &console).await,
        StatusCode::OK,
        "a user whose password did not change stays signed in"
    );
    let vera = sign_in(&console, "vera", NEW_PASSWORD).await;
    assert_eq!(home_status(&vera, &console).await, StatusCode::OK);
    stack.stop().await.expect("stop");
}
