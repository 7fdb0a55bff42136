//! Scenario 5 in the driver's report: XML parse + signature verification of a
//! typical notification against MD5 of the same bytes, and a v3 notification's
//! header verification + decryption + parse against RSA verification alone
//! (each against the floor it is built on), timed in a plain loop so the
//! figures land in docs/BENCHMARKS.md. `cargo bench -p wxpay-bench` runs the
//! same pair under criterion for confidence intervals.

use std::time::Instant;

use md5::{Digest, Md5};
use wxpay_core::wechat::{
    sign,
    v3::{
        self, models::Notification, models::Transaction, Apiv3Key, MerchantSigner, WechatKey,
        WechatKeys,
    },
    xml, SignType,
};

use crate::{report::Section, Mode};

fn per_op(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed().as_nanos() as f64 / iterations as f64
}

pub fn run(mode: Mode, command: &str) -> anyhow::Result<Section> {
    let iterations = match mode {
        Mode::Full => 200_000,
        Mode::Smoke => 2_000,
    };
    let merchant = wechat_sandbox::SandboxConfig::for_tests().merchant;
    let body = crate::notification::paid_xml(&merchant, "B01J0000000000000000000042", 1)?;
    let bytes = body.as_bytes();
    let parse_verify = per_op(iterations, || {
        if let Ok(fields) = xml::decode(std::hint::black_box(bytes)) {
            std::hint::black_box(sign::verify(&fields, &merchant.api_key, SignType::Md5).is_ok());
        }
    });
    let md5 = per_op(iterations, || {
        std::hint::black_box(Md5::digest(std::hint::black_box(bytes)));
    });
    let v3 = v3_rows(iterations)?;
    let mut section = Section::new(
        "5. Micro-benchmarks: a notification's XML parse + signature check vs MD5; v3's verify + decrypt vs RSA verify",
        command,
        &["operation", "ns/op", "relative"],
    );
    section.method = format!(
        "A typical paid notification ({} bytes, 16 fields), {iterations} iterations after a warm-up. \
         \"MD5\" is md-5's digest of the same bytes (the hash the signature check is built on). \
         The criterion version: `cargo bench -p wxpay-bench`.",
        bytes.len()
    );
    section.rows.push(vec![
        "xml::decode + sign::verify (MD5)".into(),
        format!("{parse_verify:.0}"),
        format!("{:.1}×", parse_verify / md5),
    ]);
    section.rows.push(vec![
        "MD5 of the same bytes".into(),
        format!("{md5:.0}"),
        "1.0×".into(),
    ]);
    section.rows.push(vec![
        format!(
            "v3 ({} bytes): verify::verify (RSA-2048) + JSON envelope + AES-256-GCM decrypt + JSON payment",
            v3.bytes
        ),
        format!("{:.0}", v3.full),
        format!("{:.2}× (of RSA verify)", v3.full / v3.rsa),
    ]);
    section.rows.push(vec![
        "RSA-2048 PKCS#1 SHA-256 verify of the same message (the v3 floor)".into(),
        format!("{:.0}", v3.rsa),
        "1.00× (of RSA verify)".into(),
    ]);
    Ok(section)
}

struct V3Figures {
    bytes: usize,
    full: f64,
    rsa: f64,
}

/// The gateway's CPU work on a v3 notification, with the test keys of
/// core's vectors standing in for WeChat's platform certificate and key.
fn v3_rows(iterations: u32) -> anyhow::Result<V3Figures> {
    // RSA verification is ~50x the MD5 check; fewer iterations give the
    // same precision in the same time.
    let iterations = (iterations / 20).max(100);
    let wechat = MerchantSigner::from_pem(PLATFORM_KEY.as_bytes(), "bench")
        .map_err(|e| anyhow::anyhow!("the bench's platform key: {e}"))?;
    let cert = WechatKey::from_certificate_pem(PLATFORM_CERT)
        .map_err(|e| anyhow::anyhow!("the bench's platform certificate: {e}"))?;
    let apiv3_key =
        Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnop").map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = chrono::Utc::now();
    let signed = crate::notification_v3::paid_v3(
        &crate::notification_v3::V3Parties {
            app_id: "wxd678efh567hg6787",
            mch_id: "1230000109",
            apiv3_key: &apiv3_key,
            wechat: &wechat,
            wechat_key_id: cert.id(),
        },
        "B01J0000000000000000000042",
        1,
        now.timestamp(),
    )?;
    let keys = WechatKeys::new(vec![cert.clone()]);
    let headers = v3::SignedHeaders::from_fn(|name| signed.header(name));
    // Every step must succeed once before it is timed.
    let work = || -> Option<Transaction> {
        v3::verify::verify(&headers, &signed.body, &keys, now).ok()?;
        let envelope: Notification = serde_json::from_slice(&signed.body).ok()?;
        let plain = envelope.resource.decrypt(&apiv3_key).ok()?;
        serde_json::from_slice(&plain).ok()
    };
    anyhow::ensure!(
        work().is_some(),
        "the bench's v3 notification does not verify and open"
    );
    let full = per_op(iterations, || {
        std::hint::black_box(work());
    });
    let message = v3::verify::message(
        headers.timestamp.unwrap_or_default(),
        headers.nonce.unwrap_or_default(),
        &signed.body,
    );
    let signature = headers.signature.unwrap_or_default().to_owned();
    let rsa = per_op(iterations, || {
        std::hint::black_box(cert.verifies(std::hint::black_box(&message), &signature));
    });
    Ok(V3Figures {
        bytes: signed.body.len(),
        full,
        rsa,
    })
}

/// Test keys only (core/tests/testdata/v3, made with openssl): WeChat's side
/// of the bench's v3 notification.
const PLATFORM_KEY: &str = include_str!("../../../core/tests/testdata/v3/platform_key.pem");
const PLATFORM_CERT: &str = include_str!("../../../core/tests/testdata/v3/platform_cert.pem");
