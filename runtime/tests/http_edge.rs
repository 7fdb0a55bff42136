//! The shared accept loop against real sockets: idle connections of both
//! protocols are closed, a connection at the cap makes room, a busy one is
//! never taken for idle, a trickled body is cut early, and shutdown lets a
//! request in flight finish.

use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::rejection::BytesRejection,
    http::StatusCode,
    routing::{get, post},
    Router,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use wxpay_runtime::http_edge::{serve, BodyRate, ConnectionLimits};

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
                tokio::spawn(async move {
                    for _ in 0..5 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if tx.send(Ok(Bytes::from_static(b"tick\n"))).await.is_err() {
                            return;
                        }
                    }
                });
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            }),
        )
        .route(
            "/echo",
            post(|body: Result<Bytes, BytesRejection>| async move {
                match body {
                    Ok(b) => (StatusCode::OK, b.len().to_string()),
                    Err(_) => (StatusCode::REQUEST_TIMEOUT, "too slow".to_owned()),
                }
            }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start(limits: ConnectionLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router(), limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

fn limits(header_ms: u64, idle_ms: u64) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        ..ConnectionLimits::default()
    }
}

/// One keep-alive request on `stream`; returns the status line.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The test routes' replies are small and end with their body.
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before replying");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// Waits until the peer closes `stream`; how long that took, or `None` past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(limits(10_000, 300)).await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    assert!(request(&mut conn, "/").await.contains("200"));

    let took = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("closed while idle");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}

#[tokio::test]
async fn a_prior_knowledge_http2_connection_that_sends_no_request_is_cut_at_the_header_timeout() {
    let server = start(limits(300, 60_000)).await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    // The client preface and an empty SETTINGS frame: a valid HTTP/2 start, then nothing.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");

    let took = closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(took.is_some(), "still open 5 s later");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let server = start(limits(10_000, 300)).await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(
            axum::http::Request::get(format!("http://{}/", server.addr))
                .body(String::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), 200);

    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection was still open after 5 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_response_still_streaming_keeps_its_connection_past_the_idle_timeout() {
    let server = start(limits(10_000, 300)).await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    conn.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    // Five ticks 200 ms apart: a second of streaming against a 300 ms idle timeout.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains("0\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read_all.is_ok(), "the stream stalled");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("tick").count(), 5, "cut mid-stream:\n{text}");
}

#[tokio::test]
async fn a_slow_request_is_not_taken_for_an_idle_connection() {
    let server = start(limits(10_000, 300)).await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    // The handler takes 800 ms, well past the idle timeout.
    assert!(request(&mut conn, "/slow").await.contains("200"));
}

#[tokio::test]
async fn at_the_connection_cap_the_idlest_connection_makes_room() {
    let server = start(ConnectionLimits {
        max_connections: 4,
        ..limits(10_000, 60_000)
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        assert!(request(&mut conn, "/").await.contains("200"));
        idle.push(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let mut newcomer = TcpStream::connect(server.addr).await.expect("connect");
    let answered = tokio::time::timeout(Duration::from_secs(3), request(&mut newcomer, "/")).await;
    let took = started.elapsed();
    assert!(
        answered.is_ok_and(|s| s.contains("200")),
        "the fifth connection waited {took:?}"
    );
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2))
            .await
            .is_some(),
        "the idlest (first) connection made room"
    );
    assert!(
        closed_within(&mut idle[3], Duration::from_millis(300))
            .await
            .is_none(),
        "the most recently used one stays"
    );
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_its_minimum_rate_not_a_request_timeout() {
    let server = start(ConnectionLimits {
        body_rate: BodyRate {
            grace: Duration::from_millis(300),
            min_rate: 10_000,
        },
        ..limits(10_000, 60_000)
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    conn.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .expect("head");
    let started = Instant::now();
    let (mut reader, mut writer) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let took = started.elapsed();
    trickle.abort();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // 300 ms grace + 1000 bytes at 10,000 B/s = 400 ms; the trickle needed 50 s.
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let mut server = start(limits(10_000, 60_000)).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    assert!(request(&mut idle, "/").await.contains("200"));
    let mut busy = TcpStream::connect(server.addr).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let _ = server.stop.take().map(|s| s.send(()));
    assert!(closed_within(&mut idle, Duration::from_secs(3))
        .await
        .is_some());
    let mut buf = [0u8; 1024];
    let n = busy.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stopped")
        .expect("no panic");
}
