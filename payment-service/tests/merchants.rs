//! Several merchants in one payment-service: a direct MD5 merchant (`default`)
//! and an HMAC-SHA256 service-provider merchant with a sub merchant, against a
//! sandbox that hosts both and issued each its own client certificate. Each
//! order is placed, queried, refunded (over its own merchant's certificate)
//! and reconciled in the daily bill with its own merchant's credentials; the
//! sandbox would refuse any request signed with the other's key or missing the
//! sub merchant.

mod common;

use chrono::Utc;
use common::*;
use tonic::Code;
use wxpay_core::wechat::{ApiKey, Merchant, MerchantEntry, SignType};
use wxpay_proto::v1::{CreateOrderRequest, RefundOrderRequest, RefundStatus, TradeType};

const PROVIDER_KEY: &str = "providerkey0123456789abcdefghijk";
const SUB_MCH_ID: &str = "1900000401";

fn provider() -> MerchantEntry {
    MerchantEntry {
        sub_mch_id: Some(SUB_MCH_ID.into()),
        sub_app_id: Some("wx2222222222222222".into()),
        ..MerchantEntry::direct(
            "tenant",
            Merchant {
                app_id: "wxabcdefabcdefabcd".into(),
                mch_id: "1900000400".into(),
                api_key: ApiKey::parse(PROVIDER_KEY).expect("key"),
            },
            SignType::HmacSha256,
        )
    }
}

async fn harness() -> Harness {
    start(Options {
        merchants: vec![provider()],
        client_tls: true,
        ..Options::default()
    })
    .await
}

/// Creates an order, pays it in the sandbox and has the service learn it
/// through QueryOrder (with that order's merchant). Returns out_trade_no.
async fn paid(h: &mut Harness, req: CreateOrderRequest) -> String {
    let reply = h
        .client
        .create_order(req)
        .await
        .expect("created")
        .into_inner();
    let order = reply.order.expect("order");
    h.pay_and_query(&order.out_trade_no).await;
    order.out_trade_no
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_merchant_places_queries_refunds_and_reconciles_with_its_own_credentials() {
    let mut h = harness().await;
    let direct = paid(&mut h, request("k-m-direct", 300)).await;
    let tenant = paid(
        &mut h,
        CreateOrderRequest {
            merchant: "tenant".into(),
            trade_type: TradeType::Native as i32,
            openid: String::new(),
            product_id: "sku-7".into(),
            ..request("k-m-tenant", 500)
        },
    )
    .await;

    // The sandbox recorded each under its own account and sign type.
    let seen: serde_json::Value = h
        .http
        .get(format!("{}/sandbox/orders/{tenant}", h.sandbox))
        .send()
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["mch_id"], "1900000400");
    assert_eq!(seen["sub_mch_id"], SUB_MCH_ID);
    assert_eq!(seen["sign_type"], "HMAC-SHA256");
    assert_eq!(h.sandbox_status(&direct).await, "SUCCESS");

    // Refunds go out over each merchant's own client certificate (the
    // sandbox's TLS listener checks it belongs to the mch_id that signs).
    for (no, fee) in [(&direct, 100), (&tenant, 200)] {
        let refund = h
            .client
            .refund_order(RefundOrderRequest {
                out_trade_no: no.clone(),
                out_refund_no: format!("{no}-r1"),
                refund_fee: fee,
                reason: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("refund of {no}: {s:?}"))
            .into_inner();
        assert_eq!(refund.status, RefundStatus::Processing as i32);
        assert!(!refund.refund_id.is_empty(), "WeChat accepted it");
        let settled = h
            .control(
                &format!("/sandbox/refunds/{no}-r1/settle"),
                serde_json::json!({"status": "SUCCESS", "delivery": "drop"}),
            )
            .await;
        assert!(settled.is_success(), "{settled}");
    }

    // The day's bill: one download per merchant, one report. Both payments and
    // both refunds are WeChat's rows; the refunds (whose notifications were
    // dropped) are repaired through each merchant's own refundquery.
    let today = (Utc::now() + chrono::Duration::hours(8)).date_naive();
    let report = h
        .payments
        .reconcile_downloaded(today)
        .await
        .expect("reconciled");
    assert_eq!(report.wechat_rows, 4, "{report:?}");
    assert_eq!(report.matched, 2, "both payments: {report:?}");
    assert_eq!(report.repaired, 2, "both refunds: {report:?}");
    assert!(report.discrepancies.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_is_named_or_refused_and_its_rules_hold() {
    let mut h = harness().await;
    // Unknown merchant: INVALID_ARGUMENT naming it; nothing stored.
    let err = h
        .client
        .create_order(CreateOrderRequest {
            merchant: "nobody".into(),
            ..request("k-m-nobody", 1)
        })
        .await
        .expect_err("no such merchant");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("merchant"), "{}", err.message());
    assert!(
        err.message().contains("default, tenant"),
        "{}",
        err.message()
    );
    // sub_openid is the tenant's payer: JSAPI with it pays in the sub app.
    let reply = h
        .client
        .create_order(CreateOrderRequest {
            merchant: "tenant".into(),
            openid: String::new(),
            sub_openid: "oSubPayer-1".into(),
            ..request("k-m-sub", 2)
        })
        .await
        .expect("JSAPI by sub_openid")
        .into_inner();
    let payment = reply.payment.expect("requestPayment parameters");
    assert_eq!(payment.app_id, "wx2222222222222222");
    assert_eq!(payment.sign_type, "HMAC-SHA256");
    let order = reply.order.expect("order");
    assert_eq!(order.merchant, "tenant");
    assert!(order.openid.is_empty());
    // The default merchant has no sub app: a sub_openid cannot be paid there.
    let err = h
        .client
        .create_order(CreateOrderRequest {
            openid: String::new(),
            sub_openid: "oSubPayer-1".into(),
            ..request("k-m-sub-default", 2)
        })
        .await
        .expect_err("no sub app");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("sub_openid"), "{}", err.message());
    // An unknown trade type number is refused, not taken for JSAPI.
    let err = h
        .client
        .create_order(CreateOrderRequest {
            trade_type: 42,
            ..request("k-m-type", 2)
        })
        .await
        .expect_err("no such trade type");
    assert!(err.message().starts_with("trade_type"), "{}", err.message());
}
