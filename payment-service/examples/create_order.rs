//! Creates an order through the PaymentService gRPC API and prints the
//! `wx.requestPayment` parameters, as a mini program's backend would.
//!
//! cargo run -p payment-service --example create_order -- [http://127.0.0.1:50051] [total_fee_fen]
//! Sends `authorization: Bearer $API_TOKEN` when API_TOKEN is set.

use wxpay_proto::v1::{payment_service_client::PaymentServiceClient, CreateOrderRequest};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let total_fee: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let channel = tonic::transport::Endpoint::from_shared(addr)?
        .connect()
        .await?;
    let token = std::env::var("API_TOKEN").ok().filter(|t| !t.is_empty());
    let mut client =
        PaymentServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(t) = &token {
                let value = format!("Bearer {t}").parse().map_err(|_| {
                    tonic::Status::invalid_argument("API_TOKEN is not a valid header value")
                })?;
                req.metadata_mut().insert("authorization", value);
            }
            Ok(req)
        });
    let key = format!("example-{}", std::process::id());
    let response = client
        .create_order(CreateOrderRequest {
            idempotency_key: key,
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "示例商品-1份".into(),
            total_fee,
            attach: "example".into(),
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("{response:#?}");
    Ok(())
}
