//! `config::merchants()`: the merchants file and the `WECHAT_*` variables
//! together. One test function, because the environment is the process's and
//! the cases must not run at once.

use std::io::Write;

use wxpay_core::wechat::SignType;
use wxpay_runtime::config::merchants;

const KEY_A: &str = "192006250b4c09247ec02edce69f6a2d";
const KEY_B: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";

fn clear() {
    for var in [
        "MERCHANTS_FILE",
        "WECHAT_APP_ID",
        "WECHAT_MCH_ID",
        "WECHAT_API_KEY",
        "WECHAT_SIGN_TYPE",
        "TEST_MERCHANTS_PROVIDER_KEY",
    ] {
        std::env::remove_var(var);
    }
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn set_wechat() {
    std::env::set_var("WECHAT_APP_ID", "wxd930ea5d5a258f4f");
    std::env::set_var("WECHAT_MCH_ID", "10000100");
    std::env::set_var("WECHAT_API_KEY", KEY_A);
}

#[test]
fn merchants_come_from_the_file_and_the_wechat_variables() {
    clear();
    // Neither: the WECHAT_* variables are required, as before.
    let err = merchants().expect_err("nothing configured");
    assert_eq!(err.var, "WECHAT_APP_ID");

    // Only the variables: one merchant, `default`, with WECHAT_SIGN_TYPE.
    set_wechat();
    std::env::set_var("WECHAT_SIGN_TYPE", "HMAC-SHA256");
    let book = merchants().expect("env only");
    assert_eq!(book.entries().len(), 1);
    let default = book.get("default").expect("default");
    assert_eq!(default.merchant.mch_id, "10000100");
    assert_eq!(default.sign_type, SignType::HmacSha256);

    // The file and the variables: both, the file's key read from api_key_env.
    std::env::set_var("TEST_MERCHANTS_PROVIDER_KEY", KEY_B);
    let good = file(
        r#"
[[merchant]]
name = "platform"
app_id = "wx2421b1c4370ec43b"
mch_id = "10000200"
api_key_env = "TEST_MERCHANTS_PROVIDER_KEY"
sign_type = "MD5"
sub_mch_id = "10000201"
sub_app_id = "wx1111111111111111"
"#,
    );
    std::env::set_var("MERCHANTS_FILE", good.path());
    let book = merchants().expect("file and env");
    assert_eq!(book.entries().len(), 2);
    let platform = book
        .for_message("10000200", Some("10000201"))
        .expect("by numbers");
    assert_eq!(platform.name, "platform");
    assert_eq!(platform.merchant.api_key.expose_secret(), KEY_B);
    assert!(book.for_message("10000200", None).is_none());

    // The file alone: the variables become optional.
    for var in ["WECHAT_APP_ID", "WECHAT_MCH_ID", "WECHAT_API_KEY"] {
        std::env::remove_var(var);
    }
    let book = merchants().expect("file only");
    assert_eq!(book.entries().len(), 1);
    assert!(book.get("default").is_none());

    // A file that names `default` while the variables define it is refused.
    set_wechat();
    let clash = file(&format!(
        "[[merchant]]\nname = \"default\"\napp_id = \"wx2421b1c4370ec43b\"\nmch_id = \"10000300\"\napi_key = \"{KEY_B}\"\n"
    ));
    std::env::set_var("MERCHANTS_FILE", clash.path());
    let err = merchants().expect_err("two defaults");
    assert_eq!(err.var, "MERCHANTS_FILE");
    assert!(err.reason.contains("merchant default: name"), "{err}");

    // Two merchants with one mch_id are refused, naming the second.
    let twice = file(&format!(
        "[[merchant]]\nname = \"again\"\napp_id = \"wx2421b1c4370ec43b\"\nmch_id = \"10000100\"\napi_key = \"{KEY_B}\"\n"
    ));
    std::env::set_var("MERCHANTS_FILE", twice.path());
    let err = merchants().expect_err("same mch_id as default");
    assert!(err.reason.contains("merchant again: mch_id"), "{err}");

    // A bad field names the file, the merchant and the field, never the value.
    let bad = file(
        "[[merchant]]\nname = \"shop\"\napp_id = \"wx2421b1c4370ec43b\"\nmch_id = \"10000400\"\napi_key = \"short-secret-value\"\n",
    );
    std::env::set_var("MERCHANTS_FILE", bad.path());
    let err = merchants().expect_err("bad key");
    let line = err.to_string();
    assert!(line.contains(&bad.path().display().to_string()), "{line}");
    assert!(line.contains("merchant shop: api_key"), "{line}");
    assert!(!line.contains("short-secret-value"), "{line}");

    // A file that cannot be read is named.
    std::env::set_var("MERCHANTS_FILE", "/nonexistent/merchants.toml");
    let err = merchants().expect_err("missing file");
    assert!(
        err.reason
            .contains("/nonexistent/merchants.toml cannot be read"),
        "{err}"
    );
    clear();
}
