//! The WebSocket and SSE watch a mini program opens itself, end to end on real
//! Postgres and Redis, with a real WebSocket client: the snapshot first, the
//! payment next, a normal close after the terminal status; a token for another
//! order, an expired or a garbled one is a 401 before any upgrade.

mod common;

use std::time::Duration;

use common::{spawn_app, Options, TestApp};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::{self, Message};
use wxpay_core::watch_token::WatchSecret;

const SECRET: &str = "poller-test-watch-secret-0123456789";

async fn app() -> TestApp {
    spawn_app(Options {
        watch_secret: Some(SECRET),
        ..Options::default()
    })
    .await
}

fn token(out_trade_no: &str, valid_for: chrono::Duration) -> String {
    WatchSecret::new(SECRET)
        .expect("long enough")
        .issue(out_trade_no, chrono::Utc::now() + valid_for)
}

/// The next data or close message; pings are answered by the client library.
async fn next_message<S>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
) -> Option<Result<Message, tungstenite::Error>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return other,
        }
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("a JSON event")
}

#[tokio::test]
async fn a_websocket_gets_the_snapshot_then_the_payment_then_a_normal_close() {
    let app = app().await;
    let no = app.create_order().await;
    let http = app.http_url.clone().expect("the HTTP watch is served");
    let url = format!(
        "ws://{http}/v1/orders/{no}/ws?token={}",
        token(no.as_str(), chrono::Duration::minutes(10))
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgraded");

    let Some(Ok(Message::Text(first))) = next_message(&mut socket).await else {
        panic!("no snapshot");
    };
    let first = json(&first);
    assert_eq!(first["status"], "NOTPAY");
    assert_eq!(first["source"], "SNAPSHOT");
    assert_eq!(first["out_trade_no"], no.as_str());

    app.pay(&no).await;
    let Some(Ok(Message::Text(paid))) = next_message(&mut socket).await else {
        panic!("no payment");
    };
    let paid = json(&paid);
    assert_eq!(
        (paid["status"].as_str(), paid["terminal"].as_bool()),
        (Some("SUCCESS"), Some(true))
    );
    assert_eq!(paid["total_fee"], 1);
    match next_message(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1000, "a normal close: {frame:?}")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let _ = socket.close(None).await;
}

#[tokio::test]
async fn server_sent_events_carry_the_same_json() {
    let app = app().await;
    let no = app.create_order().await;
    let http = app.http_url.clone().expect("served");
    let mut response = reqwest::Client::new()
        .get(format!(
            "http://{http}/v1/orders/{no}/events?token={}",
            token(no.as_str(), chrono::Duration::minutes(10))
        ))
        .send()
        .await
        .expect("SSE");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream")));

    let mut seen = Vec::new();
    let mut buffer = String::new();
    let mut paid = false;
    while seen.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .expect("readable")
            .expect("not the end yet");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    seen.push(json(data)["status"].as_str().unwrap_or("").to_owned());
                }
            }
        }
        if !paid && !seen.is_empty() {
            app.pay(&no).await;
            paid = true;
        }
    }
    assert_eq!(seen, ["NOTPAY", "SUCCESS"]);
}

#[tokio::test]
async fn a_bad_expired_or_foreign_token_is_401_before_any_upgrade() {
    let app = app().await;
    let no = app.create_order().await;
    let other = app.create_order().await;
    let http = app.http_url.clone().expect("served");
    let cases = [
        (
            "another order's",
            token(other.as_str(), chrono::Duration::minutes(10)),
        ),
        (
            "an expired",
            token(no.as_str(), chrono::Duration::seconds(-1)),
        ),
        ("a garbled", "12345.AAAA".to_owned()),
        ("no", String::new()),
        (
            "another secret's",
            WatchSecret::new("a-different-secret-of-32-characters")
                .expect("long")
                .issue(
                    no.as_str(),
                    chrono::Utc::now() + chrono::Duration::minutes(10),
                ),
        ),
    ];
    for (name, token) in cases {
        let ws = tokio_tungstenite::connect_async(format!(
            "ws://{http}/v1/orders/{no}/ws?token={token}"
        ))
        .await;
        match ws {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{name} token (ws)")
            }
            other => panic!("{name} token was not refused: {:?}", other.map(|_| ())),
        }
        let sse = reqwest::get(format!("http://{http}/v1/orders/{no}/events?token={token}"))
            .await
            .expect("answered");
        assert_eq!(sse.status(), 401, "{name} token (sse)");
    }
    assert_eq!(app.hub.watched_orders(), 0, "nothing was subscribed");
    // An unknown order with a genuine token for it: 404, not a hanging stream.
    let ghost = "GHOST0001";
    let sse = reqwest::get(format!(
        "http://{http}/v1/orders/{ghost}/events?token={}",
        token(ghost, chrono::Duration::minutes(10))
    ))
    .await
    .expect("answered");
    assert_eq!(sse.status(), 404);
}

/// The close frame the server ends `socket` with (skipping events and pings).
async fn close_code<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match next_message(socket).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_client_message_over_1_kib_closes_the_socket_with_1009() {
    let app = app().await;
    let no = app.create_order().await;
    let http = app.http_url.clone().expect("the HTTP watch is served");
    let url = format!(
        "ws://{http}/v1/orders/{no}/ws?token={}",
        token(no.as_str(), chrono::Duration::minutes(10))
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgraded");
    assert!(matches!(
        next_message(&mut socket).await,
        Some(Ok(Message::Text(_)))
    ));
    // A small message is read and ignored; the socket stays open.
    futures::SinkExt::send(&mut socket, Message::text("hello"))
        .await
        .expect("sent");
    futures::SinkExt::send(&mut socket, Message::text("x".repeat(1025)))
        .await
        .expect("sent");

    assert_eq!(close_code(&mut socket).await, Some(1009));
}

#[tokio::test]
async fn a_fifth_open_stream_with_one_token_is_429_until_one_of_them_ends() {
    let app = app().await;
    let no = app.create_order().await;
    let http = app.http_url.clone().expect("the HTTP watch is served");
    let token = token(no.as_str(), chrono::Duration::minutes(10));
    let url = format!("ws://{http}/v1/orders/{no}/ws?token={token}");
    let mut open = Vec::new();
    for _ in 0..4 {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("upgraded");
        assert!(matches!(
            next_message(&mut socket).await,
            Some(Ok(Message::Text(_)))
        ));
        open.push(socket);
    }
    // SSE counts against the same token, and is refused the same way.
    let sse = reqwest::get(format!("http://{http}/v1/orders/{no}/events?token={token}"))
        .await
        .expect("answered");
    assert_eq!(sse.status(), 429);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a fifth stream was not refused: {other:?}"),
    }

    let mut first = open.remove(0);
    first.close(None).await.expect("closed");
    drop(first);
    // The server notices the close at once; give it a moment to count.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reopened.is_some(),
        "no stream opened after one of four ended"
    );
}
