//! The Node examples under `examples/`, run against the real binaries (the
//! split deployment, on Postgres and Redis) as their users would run them: the
//! mini program page through the `wx` shim, its Node backend (`@grpc/grpc-js`
//! CreateOrder), the cloud function through the `wx-server-sdk` shim, and the
//! `node-watch` gRPC client. The driver (`examples/test/drive.js`) reports what
//! it saw as JSON; this test judges it and checks the stored orders.

use std::time::Duration;

use e2e_tests::{npm_examples, Stack, StackOptions, API_KEY, APP_ID};
use serde_json::Value;
use wxpay_proto::v1::{GetOrderRequest, OrderStatus};

/// The gateway's and the forwarder's shared secret (32 bytes, the shortest allowed).
const CLOUDPAY_SECRET: &str = "e2e-cloudpay-forwarder-secret-0123";

/// Far more than the whole drive needs (a few seconds), short enough that a
/// hung example fails the test instead of hanging it.
const DRIVE_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mini_program_pays_and_learns_success_over_a_websocket_with_no_timer() {
    let Some(examples) = npm_examples().expect("the examples' npm packages install") else {
        return;
    };
    let stack = Stack::start(StackOptions {
        cloudpay_secret: Some(CLOUDPAY_SECRET.to_owned()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    let run = tokio::process::Command::new("node")
        .arg(examples.join("test/drive.js"))
        .env("PAYMENT_SERVICE_URL", &stack.payment_url)
        .env(
            "POLLER_ADDR",
            stack.poller_url.trim_start_matches("http://"),
        )
        .env("POLLER_WS_BASE", stack.poller_ws_base())
        .env("SANDBOX_URL", &stack.sandbox_url)
        .env("WECHAT_APP_ID", APP_ID)
        .env("WECHAT_API_KEY", API_KEY)
        .env(
            "GATEWAY_CALLBACK_URL",
            format!("{}/cloudpay/callback", stack.gateway_url),
        )
        .env("CLOUDPAY_CALLBACK_SECRET", CLOUDPAY_SECRET)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DRIVE_TIMEOUT, run)
        .await
        .expect("the drive finishes in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drive.js failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("no REPORT line:\n{stdout}\n{stderr}"));
    eprintln!("{report:#}");

    // The page: created, paid in the sandbox after WeChat's client checked
    // paySign, and told SUCCESS by the poller over its one socket, no timer.
    let page = &report["page"];
    assert_eq!(page["state"], "paid", "the page's outcome: {page}");
    assert_eq!(
        page["socket_statuses"],
        serde_json::json!(["NOTPAY", "SUCCESS"])
    );
    assert_eq!(
        page["pay_sign_ok"], true,
        "paySign verifies for WeChat's client"
    );
    assert_eq!(page["paid_in_sandbox"], true);
    assert_eq!(
        page["timers"],
        serde_json::json!({ "setInterval": 0, "setTimeout": 0 }),
        "the page learnt the outcome without any timer"
    );
    assert_eq!(page["close_code"], 1000, "a normal close after SUCCESS");
    assert_eq!(page["backend_requests"], serde_json::json!([200]));
    let socket_url = page["socket_url"].as_str().unwrap_or_default();
    assert!(
        socket_url.starts_with(&format!("{}/v1/orders/", stack.poller_ws_base())),
        "the backend handed out the poller's URL: {socket_url}"
    );

    // Tokens: only the order's own opens its watch.
    let tokens = &report["tokens"];
    for refused in ["forged", "tampered", "foreign", "none"] {
        assert_eq!(tokens[refused]["http_status"], 401, "{refused}: {tokens}");
        assert_eq!(tokens[refused]["opened"], false, "{refused}: {tokens}");
        assert_eq!(tokens[refused]["messages"], 0, "{refused}: {tokens}");
    }
    assert_eq!(tokens["own"]["opened"], true, "{tokens}");
    assert_eq!(tokens["own"]["first"], "NOTPAY", "{tokens}");

    // The cloud function's order, watched over the WebSocket and by node-watch.
    let cloud = &report["cloud"];
    assert_eq!(cloud["errcode"], 0, "{cloud}");
    assert_eq!(cloud["has_payment"], true);
    assert_eq!(cloud["has_token"], true);
    assert_eq!(cloud["sdk_inited"], true, "cloud.init was called");
    assert_eq!(cloud["sandbox_pay_status"], 200);
    assert_eq!(
        cloud["ws_statuses"],
        serde_json::json!(["NOTPAY", "SUCCESS"])
    );
    assert_eq!(cloud["ws_close_code"], 1000);
    let watch = &cloud["node_watch"];
    assert_eq!(watch["exit_code"], 0, "node-watch: {watch}");
    let lines: Vec<&str> = watch["lines"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(lines.len(), 2, "node-watch printed: {lines:?}");
    // node-watch prints the enum's full name (proto-loader `enums: String`).
    assert!(lines[0].contains(" ORDER_STATUS_NOTPAY ") && lines[0].contains("source=SNAPSHOT"));
    assert!(lines[1].contains(" ORDER_STATUS_SUCCESS ") && lines[1].ends_with("(final)"));

    // The forwarder: its callback acknowledged once WeChat's orderquery
    // agreed, its replay (signed ten minutes ago) refused.
    let forwarded = &report["forwarder"];
    assert_eq!(
        forwarded["reply"],
        serde_json::json!({"errcode": 0, "errmsg": "SUCCESS"}),
        "{forwarded}"
    );
    assert_eq!(forwarded["replay"]["errcode"], 1, "{forwarded}");
    assert_eq!(forwarded["replay"]["errmsg"], "SIGNERROR", "{forwarded}");

    // What the service stored agrees with what the page and the watchers saw.
    let mut payments = stack.payments().await.expect("connect to payment-service");
    for (no, transaction_id) in [
        (
            page["out_trade_no"].as_str(),
            page["transaction_id"].as_str(),
        ),
        (cloud["out_trade_no"].as_str(), None),
        (
            forwarded["out_trade_no"].as_str(),
            forwarded["transaction_id"].as_str(),
        ),
    ] {
        let no = no.expect("an order number").to_owned();
        let order = payments
            .get_order(GetOrderRequest { out_trade_no: no })
            .await
            .expect("GetOrder")
            .into_inner();
        assert_eq!(order.status(), OrderStatus::Success);
        if let Some(id) = transaction_id {
            assert_eq!(order.transaction_id, id);
        }
    }
}
