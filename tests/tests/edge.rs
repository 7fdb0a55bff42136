//! The public listeners against the real binaries, as an attacker meets them:
//! idle connections of both HTTP versions cannot lock WeChat out of the
//! gateway, metrics are not on its public port, and an 8 MiB WebSocket message
//! closes its socket (1009) without the poller growing.

use std::time::{Duration, Instant};

use e2e_tests::{Stack, StackOptions, API_KEY, APP_ID, MCH_ID};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;
use wxpay_core::wechat::{sign, xml, ApiKey, Fields, SignType};
use wxpay_proto::v1::{CreateOrderRequest, CreateOrderResponse};

/// Idle connections opened against the gateway: more than its default
/// `GATEWAY_MAX_CONNECTIONS` (1024), half HTTP/1 after one request, half
/// HTTP/2 with prior knowledge after one request.
const IDLE_HTTP1: usize = 550;
const IDLE_HTTP2: usize = 550;

async fn create_order(stack: &Stack, key: &str) -> CreateOrderResponse {
    stack
        .payments()
        .await
        .expect("connect to payment-service")
        .create_order(CreateOrderRequest {
            idempotency_key: key.to_owned(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            description: "edge".to_owned(),
            total_fee: 1,
            client_ip: "127.0.0.1".to_owned(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner()
}

/// The notification WeChat sends when `out_trade_no` is paid, signed as the
/// harness's merchant signs (HMAC-SHA256).
fn genuine_notification(out_trade_no: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let transaction_id = format!("4200{nanos:024}");
    let mut fields: Fields = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", APP_ID),
        ("mch_id", MCH_ID),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CMC"),
        ("total_fee", "1"),
        ("cash_fee", "1"),
        ("fee_type", "CNY"),
        ("transaction_id", transaction_id.as_str()),
        ("out_trade_no", out_trade_no),
        ("time_end", "20240102150405"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let key = ApiKey::parse(API_KEY).expect("the test key");
    sign::sign_fields(&mut fields, &key, SignType::HmacSha256);
    xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodable")
}

fn authority(url: &str) -> &str {
    url.trim_start_matches("http://")
}

fn env_of<'a>(env: &'a [(&'static str, String)], var: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| *k == var)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{var} is set"))
}

/// The soft limit on open files: this test holds 1,100 sockets, the gateway as many.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(0)
}

/// Sockets the process `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// The resident set of `pid`, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .expect("VmRSS of the poller")
}

/// An HTTP/1.1 connection that made one request and stays open (keep-alive).
async fn idle_http1(addr: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).await.expect("reply");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "healthz answered"
    );
    conn
}

/// An HTTP/2 prior-knowledge connection that made one request and stays
/// open; the task drives it until the gateway closes it.
async fn idle_http2(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(
            hyper::Request::get(format!("http://{addr}/healthz"))
                .body(String::new())
                .expect("request"),
        )
        .await
        .expect("healthz over HTTP/2");
    assert_eq!(response.status(), 200);
    (sender, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_1100_idle_connections_open_a_genuine_notification_is_acknowledged_within_a_second() {
    let limit = open_files_limit();
    assert!(
        limit >= 4096,
        "the soft limit on open files is {limit}: this test holds 1,100 sockets (ulimit -n 4096)"
    );
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let order = create_order(&stack, "edge-idle-lockout").await;
    let out_trade_no = order.order.expect("an order").out_trade_no;
    let addr = authority(&stack.gateway_url).to_owned();

    // HTTP/2 first: its connections are closed only by the idle timeout
    // (60 s) or to make room; HTTP/1 ones would also meet the header timeout
    // (5 s) while waiting for a second request.
    let mut h2 = Vec::with_capacity(IDLE_HTTP2);
    for _ in 0..IDLE_HTTP2 {
        h2.push(idle_http2(&addr).await);
    }
    let mut h1 = Vec::with_capacity(IDLE_HTTP1);
    for _ in 0..IDLE_HTTP1 {
        h1.push(idle_http1(&addr).await);
    }
    let held = sockets_of(stack.gateway.pid());
    eprintln!("the gateway holds {held} sockets after 1,100 idle connections were opened");
    assert!(
        held >= 1024,
        "the connection cap was not reached ({held} sockets)"
    );

    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let started = Instant::now();
    let reply = fresh
        .post(format!("{}/wechat/pay/notify", stack.gateway_url))
        .body(genuine_notification(&out_trade_no))
        .send()
        .await
        .expect("the gateway answers")
        .text()
        .await
        .expect("reply body");
    let took = started.elapsed();
    eprintln!("genuine notification acknowledged in {took:?} with 1,100 idle connections open");

    let return_code = xml::decode(reply.as_bytes())
        .ok()
        .and_then(|f| f.get("return_code").cloned());
    assert_eq!(return_code.as_deref(), Some("SUCCESS"), "{reply}");
    // The bound, on a debug build sharing two cores.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    drop(h1);
    drop(h2);
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_not_on_the_public_port() {
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let http = reqwest::Client::new();

    let public = http
        .get(format!("{}/metrics", stack.gateway_url))
        .send()
        .await
        .expect("answered");
    assert_eq!(public.status(), 404, "no metrics on the public port");

    let metrics_addr = env_of(&stack.env.gateway, "GATEWAY_METRICS_ADDR");
    let scraped = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("answered");
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.expect("text");
    assert!(text.contains("wxpay_gateway_outbox_backlog"), "{text}");
}

#[tokio::test]
async fn an_8_mib_websocket_message_closes_its_socket_with_1009_and_the_poller_does_not_grow() {
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let order = create_order(&stack, "edge-ws-8mib").await;
    let out_trade_no = order.order.expect("an order").out_trade_no;
    let url = format!(
        "{}/v1/orders/{out_trade_no}/ws?token={}",
        stack.poller_ws_base(),
        order.watch_token
    );
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("upgraded");
    let (mut sink, mut incoming) = socket.split();
    let snapshot = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await;
    assert!(
        matches!(snapshot, Ok(Some(Ok(Message::Text(_))))),
        "the snapshot first"
    );
    let poller = stack.poller.pid();
    let before = rss_kib(poller);

    // Sent from its own task while this one reads: the poller answers from
    // the frame's header, long before the 8 MiB are through.
    let big = "x".repeat(8 * 1024 * 1024);
    let sender = tokio::spawn(async move {
        let _ = sink.send(Message::text(big)).await;
    });
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = incoming.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed within 10 s");
    let _ = sender.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(poller);
    let grown = after.saturating_sub(before);
    eprintln!("8 MiB WebSocket message: close {code:?}; poller VmRSS {before} KiB -> {after} KiB (+{grown} KiB)");

    assert_eq!(code, Some(1009), "closed as too big");
    // Buffering the message would add at least its 8 MiB.
    assert!(grown < 4 * 1024, "the poller grew by {grown} KiB");
    // And the poller still serves.
    let (mut again, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("a new watch opens");
    let snapshot = tokio::time::timeout(Duration::from_secs(10), again.next()).await;
    assert!(matches!(snapshot, Ok(Some(Ok(Message::Text(_))))));
}
