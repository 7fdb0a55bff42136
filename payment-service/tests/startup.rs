//! The payment-service binary started before its database: it waits, saying
//! so once per attempt with the next pause, and serves once the database
//! comes, without a restart. The database "comes" when a proxy in front of
//! the test's Postgres starts forwarding.

#[allow(dead_code)] // the takeover tests use the rest of it
#[path = "common/proxy.rs"]
mod proxy;

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use proxy::PgProxy;
use tokio::io::{AsyncBufReadExt, BufReader};
use wxpay_store::testing;

/// Waits up to `secs` seconds for `done`.
async fn within(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {secs} s: {what}");
}

#[tokio::test]
async fn a_service_started_before_its_database_waits_and_then_serves() {
    let url = testing::fresh_database_url().await.expect("database");
    let upstream = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(authority, _)| authority.to_owned())
        .expect("host:port in the URL");
    let proxy = PgProxy::start_cut(upstream).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .env_clear()
        .envs([
            ("DATABASE_URL", proxy.url_for(&url).as_str()),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("REDIS_URL", testing::redis_url().as_str()),
            ("WECHAT_APP_ID", "wxd930ea5d5a258f4f"),
            ("WECHAT_MCH_ID", "10000100"),
            ("WECHAT_API_KEY", "192006250b4c09247ec02edce69f6a2d"),
            (
                "WECHAT_NOTIFY_URL",
                "http://127.0.0.1:8080/wechat/pay/notify",
            ),
            ("PAYMENT_ADDR", format!("127.0.0.1:{port}").as_str()),
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    for out in [
        Box::new(child.stdout.take().expect("stdout"))
            as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().expect("log").push(line);
            }
        });
    }
    let waits = |log: &Arc<Mutex<Vec<String>>>| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("waiting for the database"))
            .cloned()
            .collect::<Vec<_>>()
    };

    within(20, "two failed attempts logged", || waits(&log).len() >= 2).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "it exited instead of waiting: {:?}",
        log.lock().expect("log")
    );
    let said = waits(&log);
    assert!(
        said[0].contains("attempt=1") && said[0].contains("retrying in 0.5s"),
        "{said:?}"
    );
    assert!(
        said[1].contains("attempt=2") && said[1].contains("retrying in 1s"),
        "{said:?}"
    );

    proxy.restore();
    let addr = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The listener is bound only once the database is connected and migrated.
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        assert!(
            child.try_wait().expect("status").is_none(),
            "it exited: {:?}",
            log.lock().expect("log")
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served: {:?}",
            log.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let migrated: i64 = {
        let pool = sqlx::PgPool::connect(&url).await.expect("database");
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .expect("the orders table exists: migrated by the service")
    };
    assert_eq!(migrated, 0);
    assert!(
        log.lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("the database is reachable")),
        "{:?}",
        log.lock().expect("log")
    );
    child.start_kill().expect("stop the service");
    let _ = child.wait().await;
}
