//! The gateway as the internet meets it: forged bodies cost no database write,
//! slow senders are cut, and an overloaded gateway answers 503 at once (which
//! WeChat retries) instead of a slow SUCCESS.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gateway::connections::Limits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wxpay_core::wechat::{Fields, SignType};

async fn database_bytes(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(app.store.pool())
        .await
        .expect("database size")
}

/// Rows in `notifications` once there is at least one (an applied payment's
/// copy is kept in the background batch, a moment after the reply).
async fn notification_rows(app: &TestApp) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(app.store.pool())
            .await
            .expect("count");
        if n > 0 || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A well-formed notification with a made-up signature and 60 KiB of padding.
fn forged(i: usize) -> String {
    let mut fields = Fields::new();
    fields.insert("return_code".into(), "SUCCESS".into());
    fields.insert("out_trade_no".into(), format!("FORGED{i:06}"));
    fields.insert("padding".into(), "x".repeat(60 * 1024));
    let sign = if i.is_multiple_of(2) {
        "A".repeat(32)
    } else {
        "B".repeat(64)
    };
    fields.insert("sign".into(), sign);
    encode(&fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_notifications_writes_nothing_and_a_genuine_one_still_lands() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    let before = database_bytes(&app).await;

    let flood: Vec<_> = (0..600)
        .map(|i| {
            let http = app.http.clone();
            let url = format!("{}/wechat/pay/notify", app.base);
            let body = forged(i);
            tokio::spawn(async move { http.post(url).body(body).send().await.map(|r| r.status()) })
        })
        .collect();
    // A genuine notification in the middle of it is acknowledged quickly.
    let started = Instant::now();
    let (_, reply) = app
        .notify(signed(
            pay_fields(&order, &transaction_id()),
            &key(),
            SignType::Md5,
        ))
        .await;
    let took = started.elapsed();
    for f in flood {
        let _ = f.await;
    }
    let grown = database_bytes(&app).await - before;
    eprintln!(
        "600 forged 60 KiB bodies: the database grew {grown} bytes; the genuine notification took {took:?}"
    );

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    assert!(
        took < Duration::from_secs(5),
        "the genuine notification took {took:?}"
    );
    assert_eq!(
        notification_rows(&app).await,
        1,
        "only the genuine one is kept"
    );
    assert!(grown < 1024 * 1024, "the database grew by {grown} bytes");
}

#[tokio::test]
async fn a_sender_that_never_finishes_its_headers_is_cut() {
    let app = spawn_app_with(Setup {
        limits: Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let addr = authority_of(&app.base);
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"POST /wechat/pay/notify HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("start a request");
    let mut buf = [0u8; 1024];
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the connection was still open after 5 s");
}

#[tokio::test]
async fn past_its_in_flight_cap_the_gateway_answers_503_at_once() {
    let app = spawn_app_with(Setup {
        limits: Limits {
            max_in_flight: 1,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    // One request holds the only slot: its body never finishes arriving.
    let addr = authority_of(&app.base);
    let mut holder = TcpStream::connect(&addr).await.expect("connect");
    holder
        .write_all(
            b"POST /wechat/pay/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<xml>",
        )
        .await
        .expect("start a request");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let (status, _) = app.notify("<xml></xml>").await;
    assert_eq!(status, 503, "shed, for WeChat to retry");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shedding must be fast"
    );
    drop(holder);
}

/// How long until the gateway closes `stream`, or `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
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
async fn a_keep_alive_connection_left_idle_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(Setup {
        limits: Limits {
            // Longer than the idle timeout, so only the idle timeout can close it.
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let mut conn = TcpStream::connect(authority_of(&app.base))
        .await
        .expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.expect("reply");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let took = closed_within(&mut conn, Duration::from_secs(10))
        .await
        .expect("closed while idle");
    eprintln!("an idle keep-alive connection was closed {took:?} after its reply");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
}

#[tokio::test]
async fn a_prior_knowledge_http2_connection_without_a_request_is_closed_at_the_header_timeout() {
    let app = spawn_app_with(Setup {
        limits: Limits {
            header_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let mut conn = TcpStream::connect(authority_of(&app.base))
        .await
        .expect("connect");
    // The HTTP/2 client preface and an empty SETTINGS frame, then silence.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");

    let took = closed_within(&mut conn, Duration::from_secs(10)).await;
    eprintln!("a silent HTTP/2 connection was closed after {took:?}");
    assert!(took.is_some(), "still open 10 s later");
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_long_before_the_request_timeout() {
    let request_timeout = Duration::from_secs(10);
    let app = spawn_app_with(Setup {
        limits: Limits {
            request_timeout,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let conn = TcpStream::connect(authority_of(&app.base))
        .await
        .expect("connect");
    let (mut reader, mut writer) = conn.into_split();
    writer
        .write_all(
            b"POST /wechat/pay/notify HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n<xml>",
        )
        .await
        .expect("head");
    let started = Instant::now();
    // One byte every 100 ms: 4000 bytes would take 400 s.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let answered = tokio::time::timeout(request_timeout, reader.read(&mut buf)).await;
    let took = started.elapsed();
    trickle.abort();
    eprintln!("a trickled 4000-byte body lost its slot after {took:?}");
    assert!(answered.is_ok(), "held for the whole request timeout");
    // The default minimum rate: 1 s plus 4000 bytes at 32 KiB/s, about 1.1 s.
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
}
