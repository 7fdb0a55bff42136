//! The daily bill (`/pay/downloadbill`) as a reconciler downloads it: WeChat's
//! text format built from the sandbox's own trades of one Beijing-time day,
//! payments (even those whose notification was lost) and refunds, in the
//! current 27-column or the older 24-column layout, plain or gzipped.

mod common;

use std::{io::Read, time::Duration};

use common::{call, call_raw, client, field, new_out_trade_no, order, paid_order, sandbox};
use wechat_sandbox::{BillLayout, SandboxConfig, SandboxHandle, SettleOptions};
use wxpay_core::wechat::SignType;

const BILL: &str = "/pay/downloadbill";
const ALL_27: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_7: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const ALL_24: &str = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率";
const SUMMARY_5: &str = "总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额";

/// A downloaded bill, split the way a careful parser would.
#[derive(Debug)]
struct Bill {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    summary_header: String,
    summary: Vec<String>,
}

impl Bill {
    fn parse(text: &str) -> Self {
        let text = text
            .strip_prefix('\u{feff}')
            .expect("a byte-order mark first");
        let lines: Vec<&str> = text
            .strip_suffix("\r\n")
            .expect("CRLF at the end")
            .split("\r\n")
            .collect();
        assert!(lines.len() >= 4, "{lines:?}");
        let fields = |line: &str| -> Vec<String> {
            line.split(',')
                .map(|f| {
                    f.strip_prefix('`')
                        .expect("every field starts with a backquote")
                        .to_owned()
                })
                .collect()
        };
        let n = lines.len();
        Self {
            header: lines[0].split(',').map(str::to_owned).collect(),
            rows: lines[1..n - 2].iter().map(|l| fields(l)).collect(),
            summary_header: lines[n - 2].to_owned(),
            summary: fields(lines[n - 1]),
        }
    }

    /// The row whose `column` is `value`, as column name → value.
    fn row(&self, column: &str, value: &str) -> std::collections::HashMap<&str, &str> {
        let at = self.column(column);
        let row = self
            .rows
            .iter()
            .find(|r| r[at] == value)
            .unwrap_or_else(|| panic!("no row with {column} = {value}: {self:?}"));
        self.header
            .iter()
            .map(String::as_str)
            .zip(row.iter().map(String::as_str))
            .collect()
    }

    fn column(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }
}

/// The Beijing date an order was paid, as `bill_date`.
async fn paid_on(sandbox: &SandboxHandle, out_trade_no: &str) -> String {
    let view = sandbox.order(out_trade_no).await.expect("order");
    view.time_end.expect("paid")[..8].to_owned()
}

async fn download(sandbox: &SandboxHandle, pairs: &[(&str, &str)]) -> (String, Vec<u8>) {
    call_raw(sandbox, BILL, pairs, SignType::Md5).await
}

async fn bill_text(sandbox: &SandboxHandle, date: &str, bill_type: &str) -> String {
    let (content_type, bytes) =
        download(sandbox, &[("bill_date", date), ("bill_type", bill_type)]).await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    String::from_utf8(bytes).expect("UTF-8")
}

#[tokio::test]
async fn the_all_bill_lists_the_days_payments_and_refunds_in_the_27_column_format() {
    let sandbox = sandbox().await;
    // Both paid with the notification dropped: the bill still has them.
    let a = paid_order(&sandbox, 1234).await;
    let b = paid_order(&sandbox, 600).await;
    let refund = call(
        &sandbox,
        "/secapi/pay/refund",
        &[
            ("out_trade_no", &a),
            ("out_refund_no", "RA1"),
            ("total_fee", "1234"),
            ("refund_fee", "300"),
        ],
        SignType::Md5,
    )
    .await;
    sandbox
        .settle_refund("RA1", SettleOptions::default())
        .await
        .expect("settled");
    let date = paid_on(&sandbox, &a).await;

    let bill = Bill::parse(&bill_text(&sandbox, &date, "ALL").await);

    assert_eq!(bill.header.join(","), ALL_27);
    assert_eq!(bill.rows.len(), 3);
    assert!(bill.rows.iter().all(|r| r.len() == 27));
    let view = sandbox.order(&a).await.expect("order");
    let paid = bill.row("商户订单号", &a);
    let refunded = bill.row("商户退款单号", "RA1");
    for (k, v) in [
        ("公众账号ID", sandbox.merchant().app_id.as_str()),
        ("商户号", sandbox.merchant().mch_id.as_str()),
        ("特约商户号", "0"),
        ("微信订单号", view.transaction_id.as_deref().unwrap_or("")),
        ("用户标识", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("交易类型", "JSAPI"),
        ("交易状态", "SUCCESS"),
        ("货币种类", "CNY"),
        ("应结订单金额", "12.34"),
        ("微信退款单号", "0"),
        ("商户退款单号", "0"),
        ("退款金额", "0.00"),
        ("商品名称", "测试商品"),
        ("商户数据包", "cart=42"),
        ("手续费", "0.07000"),
        ("费率", "0.60%"),
        ("订单金额", "12.34"),
        ("申请退款金额", "0.00"),
    ] {
        assert_eq!(paid[k], v, "payment row, {k}");
    }
    let paid_time = chrono::NaiveDateTime::parse_from_str(paid["交易时间"], "%Y-%m-%d %H:%M:%S")
        .expect("yyyy-MM-dd HH:mm:ss");
    assert_eq!(
        paid_time.format("%Y%m%d%H%M%S").to_string(),
        view.time_end.clone().unwrap_or_default()
    );
    for (k, v) in [
        ("商户订单号", a.as_str()),
        ("交易状态", "REFUND"),
        ("应结订单金额", "0.00"),
        ("微信退款单号", field(&refund, "refund_id")),
        ("退款金额", "3.00"),
        ("退款类型", "ORIGINAL"),
        ("退款状态", "SUCCESS"),
        ("手续费", "-0.02000"),
        ("订单金额", "0.00"),
        ("申请退款金额", "3.00"),
    ] {
        assert_eq!(refunded[k], v, "refund row, {k}");
    }
    assert_eq!(bill.row("商户订单号", &b)["手续费"], "0.04000");
    assert_eq!(bill.summary_header, SUMMARY_7);
    // 12.34 + 6.00 paid, 3.00 refunded, fees 0.07 + 0.04 - 0.02.
    assert_eq!(
        bill.summary,
        ["3", "18.34", "3.00", "0.00", "0.09000", "18.34", "3.00"]
    );
}

#[tokio::test]
async fn success_and_refund_bills_have_their_own_columns_and_rows() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 500).await;
    call(
        &sandbox,
        "/secapi/pay/refund",
        &[
            ("out_trade_no", &no),
            ("out_refund_no", "RS1"),
            ("total_fee", "500"),
            ("refund_fee", "500"),
        ],
        SignType::Md5,
    )
    .await;
    let date = paid_on(&sandbox, &no).await;

    let success = Bill::parse(&bill_text(&sandbox, &date, "SUCCESS").await);
    let refund = Bill::parse(&bill_text(&sandbox, &date, "REFUND").await);

    assert_eq!(success.header.len(), 20);
    assert_eq!(success.rows.len(), 1);
    assert_eq!(success.row("商户订单号", &no)["交易状态"], "SUCCESS");
    assert_eq!(
        success.summary,
        ["1", "5.00", "0.00", "0.00", "0.03000", "5.00", "0.00"]
    );
    assert_eq!(refund.header.len(), 29);
    assert_eq!(refund.rows.len(), 1);
    let row = refund.row("商户退款单号", "RS1");
    assert_eq!(row["交易状态"], "REFUND");
    assert_eq!(row["退款状态"], "PROCESSING");
    assert_eq!(row["退款成功时间"], "");
    assert!(
        chrono::NaiveDateTime::parse_from_str(row["退款申请时间"], "%Y-%m-%d %H:%M:%S").is_ok(),
        "{row:?}"
    );
    assert_eq!(
        refund.summary,
        ["1", "0.00", "5.00", "0.00", "-0.03000", "0.00", "5.00"]
    );
}

#[tokio::test]
async fn the_legacy_layout_has_24_columns_and_a_5_field_summary() {
    let sandbox = wechat_sandbox::spawn(SandboxConfig {
        bill_layout: BillLayout::Legacy,
        ..SandboxConfig::for_tests()
    })
    .await;
    let no = paid_order(&sandbox, 3250).await;
    let date = paid_on(&sandbox, &no).await;

    let bill = Bill::parse(&bill_text(&sandbox, &date, "ALL").await);

    assert_eq!(bill.header.join(","), ALL_24);
    let row = bill.row("商户订单号", &no);
    assert_eq!(row["子商户号"], "0");
    assert_eq!(row["总金额"], "32.50");
    assert_eq!(row["手续费"], "0.20000");
    assert_eq!(bill.summary_header, SUMMARY_5);
    assert_eq!(bill.summary, ["1", "32.50", "0.00", "0.00", "0.20000"]);
}

#[tokio::test]
async fn a_day_without_trades_is_no_bill_exist_not_an_empty_file() {
    let sandbox = sandbox().await;
    // Placed but never paid, and placed then closed: not trades.
    let unpaid = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&unpaid, 1, "http://127.0.0.1:9/n", SignType::Md5))
        .await
        .expect("placed");
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .format("%Y%m%d")
        .to_string();

    for date in ["20200101", today.as_str()] {
        let reply = call(&sandbox, BILL, &[("bill_date", date)], SignType::Md5).await;

        assert_eq!(field(&reply, "return_code"), "FAIL", "{date}");
        assert_eq!(field(&reply, "return_msg"), "No Bill Exist");
        assert_eq!(field(&reply, "error_code"), "20002");
        assert!(!reply.contains_key("err_code"));
    }
}

#[tokio::test]
async fn tar_type_gzip_returns_the_same_bill_gzipped() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 99).await;
    let date = paid_on(&sandbox, &no).await;

    let plain = bill_text(&sandbox, &date, "ALL").await;
    let (content_type, gz) =
        download(&sandbox, &[("bill_date", &date), ("tar_type", "GZIP")]).await;
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut unzipped)
        .expect("a gzip stream");

    assert_eq!(content_type, "application/x-gzip");
    assert_eq!(unzipped, plain);
}

#[tokio::test]
async fn an_aged_order_moves_to_an_earlier_days_bill() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    let today = paid_on(&sandbox, &no).await;
    sandbox
        .age(&no, Duration::from_secs(86_400))
        .await
        .expect("a day earlier");
    let yesterday = paid_on(&sandbox, &no).await;

    let before = Bill::parse(&bill_text(&sandbox, &yesterday, "ALL").await);
    let now = call(&sandbox, BILL, &[("bill_date", &today)], SignType::Md5).await;

    assert_ne!(today, yesterday);
    assert_eq!(before.rows.len(), 1);
    assert_eq!(before.row("商户订单号", &no)["交易状态"], "SUCCESS");
    assert_eq!(field(&now, "return_msg"), "No Bill Exist");
}

#[tokio::test]
async fn bad_bill_requests_are_return_fail_with_error_code_20001() {
    let sandbox = sandbox().await;

    for (pairs, msg) in [
        (&[("bill_date", "2024-01-01")][..], "invalid bill_date"),
        (&[("bill_date", "20230229")][..], "invalid bill_date"),
        (&[][..], "missing parameter"),
        (
            &[("bill_date", "20240101"), ("bill_type", "EVERYTHING")][..],
            "invalid bill_type",
        ),
        (
            &[("bill_date", "20240101"), ("tar_type", "ZIP")][..],
            "invalid tar_type",
        ),
    ] {
        let reply = call(&sandbox, BILL, pairs, SignType::Md5).await;

        assert_eq!(field(&reply, "return_code"), "FAIL", "{pairs:?}");
        assert_eq!(field(&reply, "return_msg"), msg, "{pairs:?}");
        assert_eq!(field(&reply, "error_code"), "20001", "{pairs:?}");
    }
}

#[tokio::test]
async fn a_bill_request_with_a_bad_signature_is_refused() {
    let sandbox = sandbox().await;
    let mut merchant = sandbox.merchant().clone();
    merchant.api_key =
        wxpay_core::wechat::ApiKey::parse("wrongkeywrongkeywrongkeywrongkey").expect("key");
    let mut fields = wxpay_core::wechat::Fields::from([
        ("appid".to_owned(), merchant.app_id.clone()),
        ("mch_id".to_owned(), merchant.mch_id.clone()),
        ("nonce_str".to_owned(), "n1".to_owned()),
        ("bill_date".to_owned(), "20240101".to_owned()),
    ]);
    wxpay_core::wechat::sign::sign_fields(&mut fields, &merchant.api_key, SignType::Md5);
    let body =
        wxpay_core::wechat::xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("encodes");

    let reply = reqwest::Client::new()
        .post(format!("{}{BILL}", sandbox.base_url()))
        .body(body)
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("body");
    let reply = wxpay_core::wechat::xml::decode(&reply).expect("XML");

    assert_eq!(field(&reply, "return_code"), "FAIL");
    assert_eq!(field(&reply, "return_msg"), "SIGNERROR");
}

/// The product's own client downloads (gzipped) and reads the sandbox's bill
/// in both layouts; the summary agrees with the rows, and an empty day is None.
#[tokio::test]
async fn the_products_client_reads_both_layouts() {
    for layout in [BillLayout::Current, BillLayout::Legacy] {
        let sandbox = wechat_sandbox::spawn(SandboxConfig {
            bill_layout: layout,
            ..SandboxConfig::for_tests()
        })
        .await;
        let no = paid_order(&sandbox, 3250).await;
        let date = paid_on(&sandbox, &no).await;
        let day = chrono::NaiveDate::parse_from_str(&date, "%Y%m%d").expect("yyyyMMdd");
        let bill = client(&sandbox)
            .download_bill(day, SignType::Md5)
            .await
            .expect("downloaded")
            .expect("a bill that day");
        assert_eq!(bill.rows.len(), 1, "{layout:?}");
        assert_eq!(
            (bill.rows[0].out_trade_no.as_str(), bill.rows[0].total_fee),
            (no.as_str(), 3250),
            "{layout:?}"
        );
        assert_eq!(bill.summary_problem(), None, "{layout:?}");
        let empty = day - chrono::Duration::days(30);
        let none = client(&sandbox)
            .download_bill(empty, SignType::Md5)
            .await
            .expect("no bill is not an error");
        assert!(none.is_none(), "{layout:?}");
    }
}
