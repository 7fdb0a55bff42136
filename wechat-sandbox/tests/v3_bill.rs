//! The v3 trade bill against the sandbox, in WeChat's two steps: `GET
//! /v3/bill/tradebill` (signed both ways) gives the SHA1 and a download_url;
//! the download (a signed GET) is the raw file, unsigned, whose bytes (gzipped
//! when asked) must match that SHA1 (core's `check_hash`). The file is the v2
//! bill of the same merchant and day, byte for byte, listing v2 and v3 trades.

mod common;

use std::{io::Read, time::Duration};

use axum::http::StatusCode;
use chrono::{NaiveDate, TimeDelta, Utc};
use common::{new_out_trade_no, order, v3::*};
use payment_service::wechat::{ClientOptions, V2Client};
use serde_json::json;
use wechat_sandbox::{Delivery, Faults, KeyMode, NotifyOptions, PayOptions, SettleOptions};
use wxpay_core::{
    domain::Nonce,
    wechat::{
        bill, sign,
        v3::{
            bill::{check_hash, sha1_hex, HashError},
            models::TradeBill,
        },
        xml, Fields, MerchantEntry, SignType,
    },
};

/// Today in Beijing, the day the trades of a test land on.
fn today() -> NaiveDate {
    (Utc::now() + TimeDelta::hours(8)).date_naive()
}

fn no_notification() -> PayOptions {
    PayOptions {
        notify: NotifyOptions {
            delivery: Delivery::Drop,
            ..NotifyOptions::default()
        },
        ..PayOptions::default()
    }
}

/// The direct merchant's day: a v3 order (4321 fen) refunded 1000 over v3
/// and settled, and a v2 order (1000 fen). Returns both out_trade_nos.
async fn trades(v3: &V3) -> (String, String) {
    let v3_no = new_out_trade_no();
    assert_eq!(v3.place_jsapi(&v3_no, NOTIFY).await.status, StatusCode::OK);
    v3.sandbox
        .pay(&v3_no, no_notification())
        .await
        .expect("paid");
    let refund = json!({
        "out_trade_no": v3_no, "out_refund_no": format!("R{v3_no}"),
        "amount": {"refund": 1000, "total": 4321, "currency": "CNY"},
    });
    let refunded = v3
        .direct("POST", "/v3/refund/domestic/refunds", Some(&refund))
        .await;
    assert_eq!(refunded.status, StatusCode::OK, "{:?}", refunded.body);
    v3.sandbox
        .settle_refund(&format!("R{v3_no}"), SettleOptions::default())
        .await
        .expect("settled");

    let v2 = V2Client::new(
        v3.sandbox.base_url(),
        MerchantEntry::direct("shop", merchant(DIRECT, DIRECT_APP), SignType::Md5),
        ClientOptions {
            backoff: Duration::from_millis(5),
            ..ClientOptions::default()
        },
    )
    .expect("a v2 client");
    let v2_no = new_out_trade_no();
    v2.unified_order(&order(&v2_no, 1000, NOTIFY, SignType::Md5))
        .await
        .expect("placed over v2");
    v3.sandbox
        .pay(&v2_no, no_notification())
        .await
        .expect("paid");
    (v3_no, v2_no)
}

fn tradebill_uri(day: NaiveDate, extra: &str) -> String {
    format!(
        "/v3/bill/tradebill?bill_date={}&bill_type=ALL{extra}",
        day.format("%Y-%m-%d")
    )
}

/// Asks for the day's bill, checks the answer is signed, and reads it.
async fn describe(v3: &V3, day: NaiveDate, extra: &str) -> TradeBill {
    let reply = v3.direct("GET", &tradebill_uri(day, extra), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.verify(&v3.public_key(DIRECT).await), Ok(()));
    let bill: TradeBill = serde_json::from_slice(&reply.body).expect("a trade bill");
    assert_eq!(bill.hash_type, "SHA1");
    bill
}

/// The path and query of a download_url, which must point back at the sandbox.
fn download_uri(v3: &V3, bill: &TradeBill) -> String {
    let uri = bill
        .download_url
        .strip_prefix(v3.sandbox.base_url())
        .unwrap_or_else(|| panic!("{} is not the sandbox's", bill.download_url));
    assert!(uri.starts_with("/v3/billdownload/file?token="), "{uri}");
    uri.to_owned()
}

/// Downloads the file as the direct merchant, checking it comes unsigned.
async fn download(v3: &V3, bill: &TradeBill) -> Vec<u8> {
    let reply = v3.direct("GET", &download_uri(v3, bill), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.header("wechatpay-signature"),
        None,
        "the file is not signed"
    );
    assert_eq!(reply.header("wechatpay-serial"), None);
    reply.body.to_vec()
}

/// The same day's v2 bill of the direct merchant (`/pay/downloadbill`, plain).
async fn v2_bill(v3: &V3, day: NaiveDate) -> Vec<u8> {
    let mut fields = Fields::new();
    for (k, v) in [
        ("appid", DIRECT_APP),
        ("mch_id", DIRECT),
        ("bill_type", "ALL"),
    ] {
        fields.insert(k.into(), v.into());
    }
    fields.insert("bill_date".into(), day.format("%Y%m%d").to_string());
    fields.insert("nonce_str".into(), Nonce::generate().as_str().into());
    sign::sign_fields(
        &mut fields,
        &merchant(DIRECT, DIRECT_APP).api_key,
        SignType::Md5,
    );
    let body = xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("XML");
    reqwest::Client::new()
        .post(format!("{}/pay/downloadbill", v3.sandbox.base_url()))
        .body(body)
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("the bill")
        .to_vec()
}

/// A bill row as the test compares it: out_trade_no, 交易状态, 订单金额 and
/// the refund's number, amount and status.
type Row = (String, String, i64, Option<(String, i64, String)>);

#[tokio::test]
async fn a_days_bill_is_served_raw_matching_its_hash_and_is_the_v2_file_of_both_dialects() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let (v3_no, v2_no) = trades(&v3).await;
    let described = describe(&v3, today(), "").await;
    let file = download(&v3, &described).await;
    assert_eq!(
        check_hash(&file, &described.hash_type, &described.hash_value),
        Ok(())
    );
    assert_eq!(described.hash_value, sha1_hex(&file));

    assert_eq!(
        file,
        v2_bill(&v3, today()).await,
        "the v2 bill, byte for byte"
    );
    let text = String::from_utf8(file).expect("UTF-8");
    let parsed = bill::parse(&text).expect("the product's bill reader reads it");
    let mut rows: Vec<Row> = parsed
        .rows
        .iter()
        .map(|r| {
            (
                r.out_trade_no.clone(),
                r.trade_state.clone(),
                r.total_fee,
                r.refund
                    .as_ref()
                    .map(|f| (f.out_refund_no.clone(), f.refund_fee, f.status.clone())),
            )
        })
        .collect();
    rows.sort();
    let mut expected = vec![
        (v3_no.clone(), "SUCCESS".to_owned(), 4321, None),
        (
            v3_no.clone(),
            "REFUND".to_owned(),
            0,
            Some((format!("R{v3_no}"), 1000, "SUCCESS".to_owned())),
        ),
        (v2_no, "SUCCESS".to_owned(), 1000, None),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    assert_eq!(parsed.summary_problem(), None);
    let summary = parsed.summary.expect("a summary");
    assert_eq!(
        (summary.rows, summary.paid, summary.refunded),
        (3, 5321, 1000)
    );
}

#[tokio::test]
async fn a_gzipped_bill_is_hashed_as_served_and_opens_to_the_same_file() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    trades(&v3).await;
    let plain = download(&v3, &describe(&v3, today(), "").await).await;
    let described = describe(&v3, today(), "&tar_type=GZIP").await;
    let gz = download(&v3, &described).await;
    assert!(gz.starts_with(&[0x1f, 0x8b]), "gzip magic");
    assert_eq!(check_hash(&gz, "SHA1", &described.hash_value), Ok(()));
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut unpacked)
        .expect("gunzips");
    assert_eq!(unpacked, plain);
}

#[tokio::test]
async fn the_wrong_hash_fault_gives_a_hash_the_served_file_does_not_match() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    trades(&v3).await;
    // A day without trades does not spend the fault.
    v3.sandbox
        .set_faults(Faults {
            bill_wrong_hash: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    let empty = v3
        .direct(
            "GET",
            &tradebill_uri(today() - TimeDelta::days(30), ""),
            None,
        )
        .await;
    assert_eq!(empty.code(), "NO_STATEMENT_EXIST");

    let wrong = describe(&v3, today(), "").await;
    let file = download(&v3, &wrong).await;
    assert!(matches!(
        check_hash(&file, &wrong.hash_type, &wrong.hash_value),
        Err(HashError::Mismatch { .. })
    ));
    assert_eq!(
        wrong.hash_value.len(),
        40,
        "well formed, just not the file's"
    );
    assert_eq!(
        v3.sandbox.faults().await.expect("faults").bill_wrong_hash,
        0
    );
    // The next answer is right again, for the same file.
    let right = describe(&v3, today(), "").await;
    let again = download(&v3, &right).await;
    assert_eq!(again, file);
    assert_eq!(check_hash(&again, "SHA1", &right.hash_value), Ok(()));
}

#[tokio::test]
async fn the_download_needs_the_merchants_own_valid_signature() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    trades(&v3).await;
    let described = describe(&v3, today(), "").await;
    let uri = download_uri(&v3, &described);

    let anonymous = v3.send("GET", &uri, "", None, &[]).await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (StatusCode::UNAUTHORIZED, "SIGN_ERROR".to_owned())
    );
    // Signed for another path: the signature does not cover this request.
    let auth = wxpay_core::wechat::v3::sign::authorization(
        &v3.direct,
        DIRECT,
        "GET",
        "/v3/billdownload/file?token=another",
        Utc::now().timestamp(),
        "n1",
        "",
    )
    .expect("signs");
    let forged = v3.send("GET", &uri, "", Some(&auth), &[]).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    // Another merchant, properly signed, finds nothing there.
    let other = v3.provider("GET", &uri, None).await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS".to_owned())
    );
    // The merchant itself gets it.
    let file = download(&v3, &described).await;
    assert_eq!(check_hash(&file, "SHA1", &described.hash_value), Ok(()));
}

#[tokio::test]
async fn a_day_without_trades_has_no_statement_and_a_malformed_request_is_a_param_error() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let empty = v3.direct("GET", &tradebill_uri(today(), ""), None).await;
    assert_eq!(
        (empty.status, empty.code()),
        (StatusCode::BAD_REQUEST, "NO_STATEMENT_EXIST".to_owned())
    );
    assert_eq!(empty.verify(&v3.public_key(DIRECT).await), Ok(()));
    for uri in [
        "/v3/bill/tradebill?bill_date=20261206&bill_type=ALL",
        "/v3/bill/tradebill?bill_date=2026-13-01",
        "/v3/bill/tradebill?bill_type=ALL",
        "/v3/bill/tradebill?bill_date=2026-12-06&tar_type=ZIP",
    ] {
        let bad = v3.direct("GET", uri, None).await;
        assert_eq!(
            (bad.status, bad.code()),
            (StatusCode::BAD_REQUEST, "PARAM_ERROR".to_owned()),
            "{uri}"
        );
    }
}
