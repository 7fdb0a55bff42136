//! Start-up configuration of the payment-service binary: a missing or bad
//! variable stops it with one line naming the variable, and never echoes a secret.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .env_clear()
        .envs(env.iter().copied())
        // No .env from the working directory may fill in what the test left out.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
    ("REDIS_URL", "redis://127.0.0.1:1"),
    ("WECHAT_APP_ID", "wxd930ea5d5a258f4f"),
    ("WECHAT_MCH_ID", "10000100"),
    ("WECHAT_API_KEY", "192006250b4c09247ec02edce69f6a2d"),
    (
        "WECHAT_NOTIFY_URL",
        "http://127.0.0.1:8080/wechat/pay/notify",
    ),
    ("PAYMENT_ADDR", "127.0.0.1:0"),
    // The database above is never there: give up after a second rather than
    // wait for it as a service does by default.
    ("DATABASE_CONNECT_TIMEOUT_SECONDS", "1"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = GOOD
        .iter()
        .copied()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    env.extend(overrides.iter().copied().filter(|(_, v)| !v.is_empty()));
    env
}

#[test]
fn a_missing_variable_stops_startup_with_one_line_naming_it() {
    let (code, stderr) = run(&with(&[("DATABASE_URL", "")]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "configuration error: DATABASE_URL is not set"
    );
}

#[test]
fn bad_values_are_named_and_secrets_are_not_echoed() {
    let cases: &[(&str, &str)] = &[
        ("WECHAT_API_KEY", "short-key-that-is-wrong"),
        ("WECHAT_SIGN_TYPE", "SHA1"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("PAYMENT_ADDR", "not-an-address"),
        ("WECHAT_MCH_ID", "abc"),
    ];
    for (var, value) in cases {
        let (code, stderr) = run(&with(&[(var, value)]));
        assert_eq!(code, 2, "{var}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    let (_, stderr) = run(&with(&[("WECHAT_API_KEY", "short-key-that-is-wrong")]));
    assert!(
        !stderr.contains("short-key-that-is-wrong"),
        "the key was echoed: {stderr}"
    );
}

#[test]
fn an_unreachable_database_fails_startup_without_leaking_the_key() {
    let (code, stderr) = run(GOOD);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("failed to start"), "{stderr}");
    assert!(
        stderr.contains("DATABASE_CONNECT_TIMEOUT_SECONDS"),
        "why it gave up: {stderr}"
    );
    assert!(!stderr.contains("192006250b4c09247ec02edce69f6a2d"));
}

#[test]
fn a_bad_pool_size_or_wait_stops_startup_naming_the_variable() {
    for (var, value) in [
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("DATABASE_MAX_CONNECTIONS", "5000"),
        ("DATABASE_MAX_CONNECTIONS", "sixteen"),
        ("DATABASE_CONNECT_TIMEOUT_SECONDS", "0"),
    ] {
        let (code, stderr) = run(&with(&[(var, value)]));
        assert_eq!(code, 2, "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

#[test]
fn a_database_url_that_does_not_parse_stops_at_once_without_waiting() {
    // No DATABASE_CONNECT_TIMEOUT_SECONDS: a service would wait for ever
    // for a database that is not there, but never for a URL that is wrong.
    let env: Vec<_> = with(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:notaport/db")])
        .into_iter()
        .filter(|(k, _)| *k != "DATABASE_CONNECT_TIMEOUT_SECONDS")
        .collect();
    let started = std::time::Instant::now();
    let (code, stderr) = run(&env);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("failed to start"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it waited for a URL that cannot work"
    );
}

#[test]
fn an_open_server_off_loopback_does_not_start() {
    let (code, stderr) = run(&with(&[("PAYMENT_ADDR", "0.0.0.0:0")]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("API_TOKEN") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );

    let (code, stderr) = run(&with(&[
        ("PAYMENT_ADDR", "0.0.0.0:0"),
        ("API_TOKEN", "too-short-token"),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("API_TOKEN must be at least 32"), "{stderr}");
    assert!(
        !stderr.contains("too-short-token"),
        "the token was echoed: {stderr}"
    );

    // The explicit opt-out gets past configuration (to the unreachable
    // database of these tests).
    let (code, stderr) = run(&with(&[
        ("PAYMENT_ADDR", "0.0.0.0:0"),
        ("ALLOW_UNAUTHENTICATED", "1"),
    ]));
    assert_eq!(code, 1, "{stderr}");
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn a_token_off_loopback_needs_tls_or_allow_plaintext() {
    let (code, stderr) = run(&with(&[
        ("PAYMENT_ADDR", "0.0.0.0:0"),
        ("API_TOKEN", TOKEN),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for name in [
        "TLS_CERT",
        "TLS_KEY",
        "ALLOW_PLAINTEXT",
        "PAYMENT_ADDR 0.0.0.0:0",
    ] {
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    assert!(!stderr.contains(TOKEN), "the token was echoed: {stderr}");

    // A callers file is a token too.
    let (_dir, callers) = callers_file("[\"*\"]");
    let (code, stderr) = run(&with(&[
        ("PAYMENT_ADDR", "0.0.0.0:0"),
        ("API_CALLERS_FILE", callers),
        ("SHOP_TOKEN", SHOP_TOKEN),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ALLOW_PLAINTEXT"), "{stderr}");

    // Each way out gets past configuration (to the unreachable database).
    let (dir, tls) = pem_files();
    let (cert, key) = (leak(&tls.0), leak(&tls.1));
    for extra in [
        vec![("ALLOW_PLAINTEXT", "1")],
        vec![("TLS_CERT", cert), ("TLS_KEY", key)],
    ] {
        let mut env = vec![("PAYMENT_ADDR", "0.0.0.0:0"), ("API_TOKEN", TOKEN)];
        env.extend(extra.iter().copied());
        let (code, stderr) = run(&with(&env));
        assert_eq!(code, 1, "{extra:?}: {stderr}");
    }
    drop(dir);
}

const SHOP_TOKEN: &str = "shop-token-0123456789abcdef-0123456";

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// A callers file with one caller `shop` (token in `SHOP_TOKEN`) confined to `merchants`.
fn callers_file(merchants: &str) -> (tempfile::TempDir, &'static str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("callers.toml");
    std::fs::write(
        &path,
        format!(
            "[[caller]]\nname = \"shop\"\ntoken_env = \"SHOP_TOKEN\"\nmerchants = {merchants}\n"
        ),
    )
    .expect("write the callers file");
    let path = leak(&path.display().to_string());
    (dir, path)
}

/// A certificate and a key PEM (start-up checks their blocks; the handshake
/// is never reached in these tests).
fn pem_files() -> (tempfile::TempDir, (String, String)) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("cert");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    let paths = (cert.display().to_string(), key.display().to_string());
    (dir, paths)
}

#[test]
fn a_bad_callers_file_stops_startup_naming_the_file_and_the_caller() {
    let cases = [
        ("[\"nobody\"]", "nobody is not a configured merchant"),
        ("[]", "merchants is empty"),
    ];
    for (merchants, expected) in cases {
        let (_dir, path) = callers_file(merchants);
        let (code, stderr) = run(&with(&[
            ("API_CALLERS_FILE", path),
            ("SHOP_TOKEN", SHOP_TOKEN),
        ]));
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        for part in ["API_CALLERS_FILE", path, "caller shop", expected] {
            assert!(stderr.contains(part), "{part}: {stderr}");
        }
    }
    let (_dir, path) = callers_file("[\"default\"]");
    let (code, stderr) = run(&with(&[("API_CALLERS_FILE", path)]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("SHOP_TOKEN is not set"), "{stderr}");
    let (code, stderr) = run(&with(&[
        ("API_CALLERS_FILE", path),
        ("SHOP_TOKEN", "short-secret"),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("at least 32") && !stderr.contains("short-secret"),
        "{stderr}"
    );
    // Its token may not be API_TOKEN's too.
    let (code, stderr) = run(&with(&[
        ("API_CALLERS_FILE", path),
        ("SHOP_TOKEN", SHOP_TOKEN),
        ("API_TOKEN", SHOP_TOKEN),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("caller shop") && !stderr.contains(SHOP_TOKEN),
        "{stderr}"
    );
    // A valid file gets past configuration.
    let (code, stderr) = run(&with(&[
        ("API_CALLERS_FILE", path),
        ("SHOP_TOKEN", SHOP_TOKEN),
    ]));
    assert_eq!(code, 1, "{stderr}");
}
