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
    assert!(!stderr.contains("192006250b4c09247ec02edce69f6a2d"));
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

    // The explicit opt-out, or a token, gets past configuration (to the
    // unreachable database of these tests).
    for extra in [
        ("ALLOW_UNAUTHENTICATED", "1"),
        ("API_TOKEN", "0123456789abcdef0123456789abcdef"),
    ] {
        let (code, stderr) = run(&with(&[("PAYMENT_ADDR", "0.0.0.0:0"), extra]));
        assert_eq!(code, 1, "{extra:?}: {stderr}");
    }
}
