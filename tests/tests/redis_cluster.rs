//! The scale-out path over a real Redis Cluster (three masters, a replica
//! each, started here on loopback ports): the split binaries with a
//! `redis+cluster://` bus publish with sharded `SPUBLISH`, and each poller
//! holds one cluster connection with an `SSUBSCRIBE` per watched order. Two
//! gateways and two pollers; a master is killed (SIGKILL) while orders are
//! being paid, and every watcher still sees every payment: events whose
//! publish failed go out again through the outbox relay once the replica has
//! taken over, and each poller, once every watched slot has a master again,
//! resubscribes and has its watchers re-read their orders.

use std::time::Duration;

use e2e_tests::{free_ports, Process, RedisCluster, Stack, StackOptions, API_KEY, APP_ID, MCH_ID};
use tonic::Streaming;
use wxpay_core::wechat::{sign, xml, ApiKey, Fields, SignType};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient, CreateOrderRequest, GetOrderRequest,
    OrderStatus, OrderStatusEvent, WatchOrderRequest,
};

const ORDERS: usize = 12;

/// Another replica of `service` from its environment as the stack started it,
/// with its own listen addresses; returns it and the environment it got.
fn replica(
    service: &str,
    template: &[(&'static str, String)],
    addrs: &[&str],
) -> (Process, Vec<(&'static str, String)>) {
    let ports = free_ports::<3>().expect("free ports");
    let mut env: Vec<(&'static str, String)> = template.to_vec();
    for (var, value) in env.iter_mut() {
        if let Some(i) = addrs.iter().position(|a| a == var) {
            *value = format!("127.0.0.1:{}", ports[i]);
        }
    }
    env.push(("RUST_LOG", "info".to_owned()));
    let process = Process::spawn(service, &env).expect("the replica starts");
    (process, env)
}

fn addr_of(process_env: &[(&'static str, String)], var: &str) -> String {
    process_env
        .iter()
        .find(|(k, _)| *k == var)
        .map(|(_, v)| v.clone())
        .expect("the variable is set")
}

async fn watcher(url: &str) -> OrderStatusServiceClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
        {
            return OrderStatusServiceClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the poller at {url} never answered");
}

/// An unpaid order of 100 + `i` fen, its key unique to this run; its out_trade_no.
async fn create_order(stack: &Stack, key: &str, i: usize) -> String {
    stack
        .payments()
        .await
        .expect("payment-service")
        .create_order(CreateOrderRequest {
            idempotency_key: format!("{key}-{}-{i}", std::process::id()),
            openid: format!("oClusterPayer{i}"),
            description: "cluster".into(),
            total_fee: 100 + i as i64,
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("order")
        .out_trade_no
}

async fn next(stream: &mut Streaming<OrderStatusEvent>) -> Option<OrderStatusEvent> {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .ok()
        .and_then(|m| m.ok())
        .flatten()
}

/// The processes' last log lines, for a failure's message.
fn logs(processes: &[&Process]) -> String {
    processes
        .iter()
        .map(|p| format!("--- {}\n{}", p.name(), p.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A payment notification as WeChat sends it, signed with the merchant's key,
/// for a payment the sandbox recorded (`view`).
fn notification(view: &serde_json::Value) -> String {
    let get = |k: &str| view[k].as_str().unwrap_or_default().to_owned();
    let mut fields = Fields::new();
    for (k, v) in [
        ("return_code", "SUCCESS".to_owned()),
        ("result_code", "SUCCESS".to_owned()),
        ("appid", APP_ID.to_owned()),
        ("mch_id", MCH_ID.to_owned()),
        ("nonce_str", "clusterreplica0000000000000000".to_owned()),
        ("openid", get("openid")),
        ("trade_type", "JSAPI".to_owned()),
        ("bank_type", "OTHERS".to_owned()),
        ("total_fee", view["total_fee"].to_string()),
        ("cash_fee", view["total_fee"].to_string()),
        ("fee_type", "CNY".to_owned()),
        ("transaction_id", get("transaction_id")),
        ("out_trade_no", get("out_trade_no")),
        ("time_end", get("time_end")),
        ("sign_type", "HMAC-SHA256".to_owned()),
    ] {
        fields.insert(k.to_owned(), v);
    }
    let key = ApiKey::parse(API_KEY).expect("the harness key");
    sign::sign_fields(&mut fields, &key, SignType::HmacSha256);
    xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodable")
}

/// Pays order `i` in the sandbox: even ones notified by the sandbox itself
/// (to the first gateway), odd ones paid silently and notified by this test
/// to the second gateway, as WeChat's retries land on any replica.
async fn pay(stack: &Stack, http: &reqwest::Client, gateway2: &str, i: usize, no: &str) {
    if i.is_multiple_of(2) {
        stack
            .sandbox_post(no, "pay", serde_json::json!({}))
            .await
            .expect("paid");
        return;
    }
    let view = stack
        .sandbox_post(no, "pay", serde_json::json!({"delivery": "drop"}))
        .await
        .expect("paid silently");
    let body = notification(&view);
    // WeChat retries until it hears SUCCESS; so does this.
    for _ in 0..200 {
        if let Ok(res) = http
            .post(format!("http://{gateway2}/wechat/pay/notify"))
            .body(body.clone())
            .send()
            .await
        {
            if res.text().await.unwrap_or_default().contains("SUCCESS") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the second gateway never acknowledged {no}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_two_pollers_lose_nothing_when_a_master_dies() {
    let started = std::time::Instant::now();
    let mut cluster = RedisCluster::start().await.expect("a Redis Cluster");
    eprintln!("cluster up after {:?}", started.elapsed());
    let stack = Stack::start(StackOptions {
        redis_url: Some(cluster.url()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts on the cluster");
    let (poller2, poller2_env) = replica(
        "poller",
        &stack.env.poller,
        &["POLLER_ADDR", "POLLER_METRICS_ADDR", "POLLER_HTTP_ADDR"],
    );
    let poller2_url = format!("http://{}", addr_of(&poller2_env, "POLLER_ADDR"));
    let (gateway2, gateway2_env) = replica(
        "gateway",
        &stack.env.gateway,
        &["GATEWAY_ADDR", "GATEWAY_METRICS_ADDR"],
    );
    let gateway2_addr = addr_of(&gateway2_env, "GATEWAY_ADDR");
    let http = reqwest::Client::new();

    eprintln!("stack and replicas up after {:?}", started.elapsed());
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        orders.push(create_order(&stack, "cluster", i).await);
    }
    let mut first = stack.watcher().await.expect("poller 1");
    let mut second = watcher(&poller2_url).await;
    let mut streams = Vec::new();
    for (i, no) in orders.iter().enumerate() {
        let client = if i.is_multiple_of(2) {
            &mut first
        } else {
            &mut second
        };
        let mut stream = client
            .watch_order(WatchOrderRequest {
                out_trade_no: no.clone(),
                timeout_seconds: 120,
                include_refunds: false,
            })
            .await
            .expect("WatchOrder")
            .into_inner();
        let snapshot = next(&mut stream).await.expect("the snapshot");
        assert_eq!(snapshot.status, OrderStatus::Notpay as i32);
        streams.push(stream);
    }

    // Before the failure: each payment reaches its watcher by sharded pub/sub.
    for (i, (no, stream)) in orders.iter().zip(&mut streams).enumerate().take(4) {
        pay(&stack, &http, &gateway2_addr, i, no).await;
        let event = next(stream).await;
        assert_eq!(
            event.map(|e| e.status),
            Some(OrderStatus::Success as i32),
            "order {i} before the failure\n{}",
            logs(&[&stack.poller, &poller2, &stack.gateway, &gateway2])
        );
    }

    // Kill the master that holds the next orders' channel, and pay the rest
    // while its replica takes over.
    let victim = cluster
        .master_of(&wxpay_store::events::channel(&orders[4]))
        .expect("the channel's master");
    cluster.kill(victim);
    let killed = std::time::Instant::now();
    for (i, no) in orders.iter().enumerate().skip(4) {
        pay(&stack, &http, &gateway2_addr, i, no).await;
    }
    for (i, stream) in streams.iter_mut().enumerate().skip(4) {
        let mut status = next(stream).await;
        // A re-read after the resubscribe may repeat the snapshot first.
        while status
            .as_ref()
            .is_some_and(|e| e.status == OrderStatus::Notpay as i32)
        {
            status = next(stream).await;
        }
        let Some(status) = status else {
            panic!(
                "order {i} (poller {}) never reached its watcher after the failure\n{}",
                i % 2 + 1,
                logs(&[
                    &stack.poller,
                    &poller2,
                    &stack.gateway,
                    &gateway2,
                    &stack.payment
                ])
            );
        };
        assert_eq!(status.status, OrderStatus::Success as i32, "order {i}");
        assert!(status.terminal);
    }
    eprintln!(
        "every watcher saw its payment {:?} after the master was killed",
        killed.elapsed()
    );
    cluster
        .until_served(Duration::from_secs(20))
        .await
        .expect("the replica took over");
    assert_ne!(
        cluster
            .master_of(&wxpay_store::events::channel(&orders[4]))
            .expect("a master again"),
        victim,
        "the channel's slot moved to the promoted replica"
    );
    let mut payments = stack.payments().await.expect("payment-service");
    for no in &orders {
        let order = payments
            .get_order(GetOrderRequest {
                out_trade_no: no.clone(),
            })
            .await
            .expect("GetOrder")
            .into_inner();
        assert_eq!(order.status, OrderStatus::Success as i32, "{no}");
    }
    drop(poller2);
    drop(gateway2);
}

/// A cluster on a shared network: TLS only (clients, replication and the
/// cluster bus) and a password. The binaries reach it as
/// `rediss+cluster://:password@seed,seed,…` trusting its CA through
/// `SSL_CERT_FILE`; every payment still reaches its watcher through sharded
/// pub/sub on it.
#[tokio::test]
async fn the_stack_runs_on_a_cluster_that_needs_tls_and_a_password() {
    let cluster = RedisCluster::start_secured()
        .await
        .expect("a TLS-only Redis Cluster with a password");
    let ca = cluster.ca_file().expect("a secured cluster has a CA");
    let stack = Stack::start(StackOptions {
        redis_url: Some(cluster.url()),
        extra_env: vec![("SSL_CERT_FILE", ca.display().to_string())],
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts on the secured cluster");
    let mut watcher = stack.watcher().await.expect("the poller");
    let mut streams = Vec::new();
    for i in 0..4 {
        let out_trade_no = create_order(&stack, "secured-cluster", i).await;
        let mut stream = watcher
            .watch_order(WatchOrderRequest {
                out_trade_no: out_trade_no.clone(),
                timeout_seconds: 60,
                include_refunds: false,
            })
            .await
            .expect("WatchOrder")
            .into_inner();
        let snapshot = next(&mut stream).await.expect("snapshot");
        assert_eq!(snapshot.status(), OrderStatus::Notpay);
        streams.push((out_trade_no, stream));
    }
    for (no, stream) in &mut streams {
        stack
            .sandbox_post(no, "pay", serde_json::json!({}))
            .await
            .expect("the payer pays");
        let event = next(stream).await.expect("the payment is pushed");
        assert_eq!(
            (event.status(), event.source.as_str()),
            (OrderStatus::Success, "NOTIFY"),
            "{no}: {}",
            logs(&[&stack.gateway, &stack.poller])
        );
    }
}
