//! Server reflection as a client nobody here wrote uses it: the Python gRPC
//! project's `grpcio-reflection` (which asks `grpc.reflection.v1alpha`), from
//! `examples/python-reflection/` in a venv the test makes, against the real
//! payment-service and poller binaries. It lists the services, then places an
//! order with a CreateOrder built from the reflected descriptors alone.

use std::path::{Path, PathBuf};

use e2e_tests::{python_venv, workspace_root, Stack, StackOptions};
use serde_json::Value;
use wxpay_proto::v1::{GetOrderRequest, OrderStatus};

fn script_dir() -> PathBuf {
    workspace_root().join("examples/python-reflection")
}

async fn reflect(python: &Path, url: &str, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(python)
        .arg(script_dir().join("reflect.py"))
        .arg(url.trim_start_matches("http://"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reflect.py failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reflection_lists_both_servers_and_places_an_order_from_reflected_descriptors() {
    let Some(python) = python_venv("py-reflection-venv", &script_dir().join("requirements.txt"))
        .expect("the reflection client installs")
    else {
        return;
    };
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");

    let payment = reflect(
        &python,
        &stack.payment_url,
        &["--create-order", "py-reflection-1"],
    )
    .await;
    let poller = reflect(&python, &stack.poller_url, &[]).await;

    let services = |v: &Value| -> Vec<String> {
        v["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let listed = services(&payment);
    assert!(
        listed.iter().any(|s| s == "wxpay.v1.PaymentService"),
        "{listed:?}"
    );
    assert!(
        listed.iter().any(|s| s == "grpc.health.v1.Health"),
        "{listed:?}"
    );
    let listed = services(&poller);
    assert!(
        listed.iter().any(|s| s == "wxpay.v1.OrderStatusService"),
        "{listed:?}"
    );

    let created = &payment["create_order"];
    let no = created["order"]["out_trade_no"]
        .as_str()
        .unwrap_or_else(|| panic!("an order number: {created}"))
        .to_owned();
    assert_eq!(
        created["order"]["status"], "ORDER_STATUS_NOTPAY",
        "{created}"
    );
    assert_eq!(created["order"]["idempotency_key"], "py-reflection-1");
    assert!(
        created["payment"]["package"]
            .as_str()
            .is_some_and(|p| p.starts_with("prepay_id=")),
        "requestPayment parameters: {created}"
    );
    assert!(created["watch_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    // The order is real: the Rust client reads it back.
    let order = stack
        .payments()
        .await
        .expect("connect to payment-service")
        .get_order(GetOrderRequest { out_trade_no: no })
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(order.status(), OrderStatus::Notpay);
    assert_eq!(order.total_fee, 1);
}
