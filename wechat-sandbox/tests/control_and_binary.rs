//! The control API as curl would use it (raw JSON), and the binary: its
//! configuration errors, its TLS files, and its graceful shutdown on SIGTERM.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{client, new_out_trade_no, order, sandbox};
use serde_json::{json, Value};
use wxpay_core::wechat::SignType;

async fn post_json(url: String, body: &'static str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).expect("the control API answers JSON"),
    )
}

#[tokio::test]
async fn pay_with_an_empty_body_uses_the_defaults_and_the_order_shows_it() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(
            &no,
            250,
            "http://127.0.0.1:9/n",
            SignType::HmacSha256,
        ))
        .await
        .expect("placed");

    let (status, paid) = post_json(
        format!("{}/sandbox/orders/{no}/pay", sandbox.base_url()),
        "",
    )
    .await;
    let view: Value = reqwest::get(format!("{}/sandbox/orders/{no}", sandbox.base_url()))
        .await
        .expect("sent")
        .json_or_panic()
        .await;

    assert_eq!(status, 200);
    assert_eq!(paid["status"], "SUCCESS");
    assert_eq!(view["status"], "SUCCESS");
    assert_eq!(view["total_fee"], 250);
    assert_eq!(view["sign_type"], "HMAC-SHA256");
    assert_eq!(view["notify_url"], "http://127.0.0.1:9/n");
    assert_eq!(view["attach"], "cart=42");
    assert_eq!(view["transaction_id"].as_str().map(str::len), Some(28));
}

/// What WeChat's client knows is `package=prepay_id=…`, not the order number:
/// a shim of `wx.requestPayment` pays by the prepay_id, and an unknown one is 404.
#[tokio::test]
async fn an_order_is_paid_by_its_prepay_id_as_the_wechat_client_knows_it() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 99, "http://127.0.0.1:9/n", SignType::Md5))
        .await
        .expect("placed");
    let placed: Value = reqwest::get(format!("{}/sandbox/orders/{no}", sandbox.base_url()))
        .await
        .expect("sent")
        .json_or_panic()
        .await;
    let prepay_id = placed["prepay_id"]
        .as_str()
        .expect("a prepay_id")
        .to_owned();

    let (status, paid) = post_json(
        format!("{}/sandbox/prepay/{prepay_id}/pay", sandbox.base_url()),
        "",
    )
    .await;
    let (unknown, _) = post_json(
        format!(
            "{}/sandbox/prepay/wx000000000000000000000000000000/pay",
            sandbox.base_url()
        ),
        "",
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(paid["out_trade_no"], no.as_str());
    assert_eq!(paid["status"], "SUCCESS");
    assert_eq!(unknown, 404);
}

#[tokio::test]
async fn invalid_control_requests_are_400_with_a_json_error() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 1, "http://127.0.0.1:9/n", SignType::Md5))
        .await
        .expect("placed");
    let pay = format!("{}/sandbox/orders/{no}/pay", sandbox.base_url());

    for body in [
        r#"{"delivery":"duplicate","duplicates":0}"#,
        r#"{"delivery":"sometimes"}"#,
        r#"{"transaction_id":"not a valid id!"}"#,
        "not json",
    ] {
        let (status, error) = post_json(pay.clone(), body).await;
        assert_eq!(status, 400, "{body}");
        assert!(error["error"].is_string(), "{body}: {error}");
    }
    assert_eq!(sandbox.order(&no).await.expect("order").status, "NOTPAY");
}

#[tokio::test]
async fn faults_are_armed_and_counted_down_per_call() {
    let sandbox = sandbox().await;
    let url = format!("{}/sandbox/faults", sandbox.base_url());

    let (status, armed) = post_json(url.clone(), r#"{"bad_signature":2}"#).await;
    let _ = client(&sandbox)
        .order_query(&new_out_trade_no(), SignType::Md5)
        .await;
    let left: Value = reqwest::get(url).await.expect("sent").json_or_panic().await;

    assert_eq!(status, 200);
    assert_eq!(
        armed,
        json!({"systemerror": 0, "timeout": 0, "process_then_timeout": 0, "bad_signature": 2, "frequency_limited": 0, "notenough": 0, "orderpaid": 0, "bill_wrong_hash": 0})
    );
    assert_eq!(
        left,
        json!({"systemerror": 0, "timeout": 0, "process_then_timeout": 0, "bad_signature": 1, "frequency_limited": 0, "notenough": 0, "orderpaid": 0, "bill_wrong_hash": 0})
    );
}

trait JsonOrPanic {
    async fn json_or_panic(self) -> Value;
}

impl JsonOrPanic for reqwest::Response {
    async fn json_or_panic(self) -> Value {
        serde_json::from_slice(&self.bytes().await.expect("body")).expect("JSON")
    }
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wechat-sandbox"));
    // Away from any .env file in the checkout.
    cmd.current_dir(std::env::temp_dir())
        .env("WECHAT_APP_ID", "wx0123456789abcdef")
        .env("WECHAT_MCH_ID", "1900000109")
        .env("WECHAT_API_KEY", "sandboxtestkey0123456789abcdefgh")
        .env("RUST_LOG", "warn")
        // Its TLS listener on a free port, not the default 8443 that parallel tests would share.
        .env("SANDBOX_TLS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_bad_time_factor_stops_start_up_with_one_line_naming_it() {
    for bad in ["0", "fast", "-1"] {
        let out = binary()
            .env("SANDBOX_TIME_FACTOR", bad)
            .output()
            .expect("runs");

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("SANDBOX_TIME_FACTOR"), "{stderr}");
    }
}

#[test]
fn a_bad_api_key_is_named_but_never_echoed() {
    let out = binary()
        .env("WECHAT_API_KEY", "tooshort-secret")
        .output()
        .expect("runs");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("WECHAT_API_KEY"), "{stderr}");
    assert!(!stderr.contains("tooshort-secret"), "{stderr}");
}

/// Starts the binary on a free port with extra variables and waits until it
/// answers. Its TLS files go to a directory removed with the returned guard:
/// a killed binary cannot remove its own.
async fn start_binary(vars: &[(&str, &str)]) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = binary();
    cmd.env("SANDBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("SANDBOX_TLS_DIR", tls_dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("starts");

    let url = format!("http://127.0.0.1:{port}/sandbox/faults");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the sandbox never answered on {port}");
    (child, port, tls_dir)
}

#[test]
fn bad_lifecycle_rule_values_stop_start_up_with_one_line_naming_them() {
    for var in [
        "SANDBOX_MIN_EXPIRE_SECONDS",
        "SANDBOX_CLOSE_MIN_AGE_SECONDS",
    ] {
        for bad in ["five", "-1", "86401"] {
            let out = binary().env(var, bad).output().expect("runs");

            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{var}={bad}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.contains(var), "{stderr}");
        }
    }
}

#[test]
fn a_bad_bill_layout_stops_start_up_with_one_line_naming_it() {
    for bad in ["26", "current"] {
        let out = binary()
            .env("SANDBOX_BILL_LAYOUT", bad)
            .output()
            .expect("runs");

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("SANDBOX_BILL_LAYOUT"), "{stderr}");
    }
}

#[tokio::test]
async fn the_binary_takes_its_lifecycle_rules_from_the_environment() {
    let (_child, port, _tls_dir) = start_binary(&[
        ("SANDBOX_MIN_EXPIRE_SECONDS", "0"),
        ("SANDBOX_CLOSE_MIN_AGE_SECONDS", "0"),
    ])
    .await;
    let merchant = wxpay_core::wechat::Merchant {
        app_id: "wx0123456789abcdef".into(),
        mch_id: "1900000109".into(),
        api_key: wxpay_core::wechat::ApiKey::parse("sandboxtestkey0123456789abcdefgh")
            .expect("key"),
    };
    let client = payment_service::wechat::V2Client::new(
        &format!("http://127.0.0.1:{port}"),
        wxpay_core::wechat::MerchantEntry::direct("default", merchant, SignType::Md5),
        Default::default(),
    )
    .expect("client");
    let no = new_out_trade_no();
    let mut soon = order(&no, 1, "http://127.0.0.1:9/n", SignType::Md5);
    soon.time_expire = Some(chrono::Utc::now() + chrono::Duration::seconds(60));

    let placed = client.unified_order(&soon).await;
    let closed = client.close_order(&no, SignType::Md5).await;

    assert!(
        placed.is_ok(),
        "a 60 s time_expire is fine with a 0 floor: {placed:?}"
    );
    assert_eq!(closed, Ok(payment_service::wechat::CloseOutcome::Closed));
}

#[tokio::test]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let (mut child, _port, _tls_dir) = start_binary(&[]).await;
    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(status.success(), "{status}");
}

#[test]
fn bad_tls_settings_stop_start_up_with_one_line_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory").expect("written");
    let a_file = a_file.to_string_lossy().into_owned();
    let nowhere = "/nonexistent/ca.pem";
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("SANDBOX_TLS_ADDR", "localhost-ish")], "SANDBOX_TLS_ADDR"),
        (&[("SANDBOX_TLS_DIR", &a_file)], "SANDBOX_TLS_DIR"),
        (&[("SANDBOX_TLS_CA", &a_file)], "SANDBOX_TLS_CERT"),
        (
            &[
                ("SANDBOX_TLS_CA", nowhere),
                ("SANDBOX_TLS_CERT", nowhere),
                ("SANDBOX_TLS_KEY", nowhere),
            ],
            "SANDBOX_TLS_CA",
        ),
        (
            &[
                ("SANDBOX_TLS_CA", &a_file),
                ("SANDBOX_TLS_CERT", &a_file),
                ("SANDBOX_TLS_KEY", &a_file),
            ],
            "SANDBOX_TLS_CA",
        ),
    ];
    for (vars, named) in cases {
        let mut cmd = binary();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{vars:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{vars:?}: {stderr}");
    }
}

#[tokio::test]
async fn the_binary_writes_the_merchants_tls_files_and_serves_secapi_over_tls() {
    use payment_service::wechat::ClientTls;

    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let tls_addr = format!("127.0.0.1:{tls_port}");
    // start_binary gives it SANDBOX_TLS_DIR: the files are written there.
    let (_child, _port, dir) = start_binary(&[("SANDBOX_TLS_ADDR", &tls_addr)]).await;
    let tls = ClientTls::from_p12_file(&dir.path().join("client.p12"), "1900000109")
        .expect("client.p12 opens with the mch_id")
        .with_extra_root_file(&dir.path().join("ca.pem"))
        .expect("ca.pem");
    for name in ["server.pem", "client.pem"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    #[cfg(unix)]
    for name in ["server.key", "client.key", "client.p12"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(name))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is for its owner only: {mode:o}");
    }

    // A refund of an order WeChat never saw: past the certificate check, the
    // business layer answers (signed) that the order does not exist.
    let http = tls
        .configure(reqwest::Client::builder())
        .build()
        .expect("client");
    // The merchant binary() configures.
    let merchant = wechat_sandbox::SandboxConfig::for_tests().merchant;
    let mut fields = wxpay_core::wechat::Fields::from([
        ("appid".to_owned(), merchant.app_id.clone()),
        ("mch_id".to_owned(), merchant.mch_id.clone()),
        (
            "nonce_str".to_owned(),
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".to_owned(),
        ),
        ("out_trade_no".to_owned(), new_out_trade_no()),
        ("out_refund_no".to_owned(), new_out_trade_no()),
        ("total_fee".to_owned(), "100".to_owned()),
        ("refund_fee".to_owned(), "100".to_owned()),
    ]);
    wxpay_core::wechat::sign::sign_fields(&mut fields, &merchant.api_key, SignType::Md5);
    let body =
        wxpay_core::wechat::xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("encodes");
    let reply = http
        .post(format!("https://{tls_addr}/secapi/pay/refund"))
        .body(body)
        .send()
        .await
        .expect("the TLS listener answers")
        .bytes()
        .await
        .expect("reply");
    let reply = wxpay_core::wechat::xml::decode(&reply).expect("XML");
    assert_eq!(
        reply.get("return_code").map(String::as_str),
        Some("SUCCESS"),
        "{reply:?}"
    );
    assert_eq!(
        reply.get("err_code").map(String::as_str),
        Some("ORDERNOTEXIST"),
        "{reply:?}"
    );
}

#[test]
fn a_bad_merchants_file_is_named_with_its_merchant_and_field_but_the_key_never_shows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("merchants.toml");
    std::fs::write(
        &path,
        "[[merchant]]\nname = \"shop\"\napp_id = \"wx3333333333333333\"\nmch_id = \"1900000300\"\napi_key = \"tooshort-secret\"\n",
    )
    .expect("written");

    let out = binary()
        .env("MERCHANTS_FILE", &path)
        .output()
        .expect("runs");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for part in ["MERCHANTS_FILE", "merchants.toml", "shop", "api_key"] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
    assert!(!stderr.contains("tooshort-secret"), "{stderr}");
}

#[tokio::test]
async fn the_binary_hosts_every_merchant_of_the_merchants_file_with_its_own_certificate() {
    const SHOP_KEY: &str = "shopkey0123456789abcdefghijklmno";
    let file_dir = tempfile::tempdir().expect("temp dir");
    let path = file_dir.path().join("merchants.toml");
    std::fs::write(
        &path,
        "[[merchant]]\nname = \"shop\"\napp_id = \"wx3333333333333333\"\nmch_id = \"1900000300\"\napi_key_env = \"SHOP_KEY\"\n",
    )
    .expect("written");
    let file = path.to_str().expect("a UTF-8 path");
    let (_child, port, tls_dir) =
        start_binary(&[("MERCHANTS_FILE", file), ("SHOP_KEY", SHOP_KEY)]).await;
    for name in [
        "client.pem",
        "client-1900000300.pem",
        "client-1900000300.p12",
    ] {
        assert!(tls_dir.path().join(name).is_file(), "{name}");
    }

    // The shop is an account of its own: its key is accepted and signs the reply.
    let shop = wxpay_core::wechat::Merchant {
        app_id: "wx3333333333333333".into(),
        mch_id: "1900000300".into(),
        api_key: wxpay_core::wechat::ApiKey::parse(SHOP_KEY).expect("key"),
    };
    let mut fields = wxpay_core::wechat::Fields::from([
        ("appid".to_owned(), shop.app_id.clone()),
        ("mch_id".to_owned(), shop.mch_id.clone()),
        ("nonce_str".to_owned(), "n1".to_owned()),
        ("out_trade_no".to_owned(), new_out_trade_no()),
    ]);
    wxpay_core::wechat::sign::sign_fields(&mut fields, &shop.api_key, SignType::Md5);
    let body =
        wxpay_core::wechat::xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("encodes");
    let reply = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/pay/orderquery"))
        .body(body)
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("reply");
    let reply = wxpay_core::wechat::xml::decode(&reply).expect("XML");
    assert_eq!(
        reply.get("err_code").map(String::as_str),
        Some("ORDERNOTEXIST"),
        "{reply:?}"
    );
    assert_eq!(
        wxpay_core::wechat::sign::verify(&reply, &shop.api_key, SignType::Md5),
        Ok(())
    );
}
