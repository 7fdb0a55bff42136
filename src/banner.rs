//! What `cargo run` prints once everything listens: where each service is, what
//! it runs on, and commands to try against it. Text only; no I/O.

use crate::{
    settings::{bus_label, storage_label, TEST_APP_ID},
    Stack,
};

/// The start-up banner for `stack`.
pub fn render(stack: &Stack) -> String {
    let a = stack.addresses();
    let s = stack.settings();
    let merchant = if s.merchant.app_id == TEST_APP_ID {
        format!(
            "{} / {} (WeChat's documented test merchant: sandbox only)",
            s.merchant.app_id, s.merchant.mch_id
        )
    } else {
        format!("{} / {}", s.merchant.app_id, s.merchant.mch_id)
    };
    // grpcurl needs the token too when the servers require one; the banner
    // names the variable, never its value (terminals are logged and shared).
    let auth = match &s.api_token {
        Some(_) => " -H \"authorization: Bearer $API_TOKEN\"".to_owned(),
        None => String::new(),
    };
    let create = r#"{"idempotency_key":"try-1","openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","description":"test","total_fee":1,"client_ip":"127.0.0.1"}"#;
    let lines = [
        String::new(),
        "wxpay is running: payment-service, gateway, poller and the WeChat Pay sandbox in one process".to_owned(),
        format!("  storage   {}", storage_label(&s.storage)),
        format!("  events    {}", bus_label(&s.bus)),
        format!("  merchant  {merchant}"),
        if stack.hosts_v3_demo() { format!(
            "  v3        merchant \"{}\" (WeChat Pay API v3, public-key mode, keys issued by the sandbox): CreateOrder with \"merchant\":\"{}\"",
            crate::stack::v3_demo::NAME,
            crate::stack::v3_demo::NAME
        ) } else { String::new() },
        String::new(),
        format!("  payment-service  grpc://{}   wxpay.v1.PaymentService", a.payment),
        format!(
            "  poller           grpc://{}   wxpay.v1.OrderStatusService/WatchOrder (metrics http://{}/metrics)",
            a.poller, a.poller_metrics
        ),
        format!(
            "  watch (mini program)  ws://{0}/v1/orders/<out_trade_no>/ws?token=<watch_token>  (SSE: http://{0}/v1/orders/<out_trade_no>/events?token=…)",
            a.poller_http
        ),
        format!(
            "  gateway          http://{}    POST /wechat/pay/notify, /wechat/v3/pay/notify, /wechat/refund/notify, /wechat/v3/refund/notify, /healthz, /readyz (metrics http://{}/metrics)",
            a.gateway, a.gateway_metrics
        ),
        format!(
            "  sandbox          http://{}    WeChat Pay v2 and v3 simulator, control API under /sandbox/",
            a.sandbox
        ),
        match (a.console, stack.console_password()) {
            (Some(addr), Some(password)) => format!(
                "  console          http://{addr}    the operator console: sign in as {} with the one-time password {password}",
                crate::stack::FIRST_OPERATOR
            ),
            (Some(addr), None) => format!(
                "  console          http://{addr}    the operator console (users from CONSOLE_USERS_FILE)"
            ),
            _ => String::new(),
        },
        String::new(),
        "  try:".to_owned(),
        format!(
            "    cargo run -p payment-service --example create_order -- {}",
            a.payment_url()
        ),
        format!(
            "    grpcurl -plaintext{auth} -d '{create}' {} wxpay.v1.PaymentService/CreateOrder",
            a.payment
        ),
        format!(
            "    grpcurl -plaintext{auth} -d '{{\"out_trade_no\":\"<out_trade_no>\"}}' {} wxpay.v1.OrderStatusService/WatchOrder",
            a.poller
        ),
        format!(
            "    curl -X POST {}/sandbox/orders/<out_trade_no>/pay",
            a.sandbox_url()
        ),
        format!(
            "    grpcurl -plaintext{auth} -d '{{\"out_trade_no\":\"<out_trade_no>\",\"out_refund_no\":\"r-1\",\"refund_fee\":1}}' {} wxpay.v1.PaymentService/RefundOrder",
            a.payment
        ),
        // What SANDBOX_REFUND_SETTLE_MS says, not its default: 0 settles none on its own.
        match s.sandbox_refund_settle {
            Some(after) => format!(
                "      (refunds go over mutual TLS with the certificate the sandbox issued; it settles them after {} ms)",
                after.as_millis()
            ),
            None => format!(
                "      (refunds go over mutual TLS with the certificate the sandbox issued; settle one with curl -X POST {}/sandbox/refunds/<out_refund_no>/settle)",
                a.sandbox_url()
            ),
        },
        "    cargo run -- demo   (the whole flow on a private stack, narrated)".to_owned(),
        String::new(),
        "  Ctrl-C stops everything.".to_owned(),
    ];
    lines.join("\n")
}
