//! Scenario 5 in the driver's report: XML parse + signature verification of a
//! typical notification against MD5 of the same bytes, timed in a plain loop so
//! the figures land in docs/BENCHMARKS.md. `cargo bench -p wxpay-bench` runs the
//! same pair under criterion for confidence intervals.

use std::time::Instant;

use md5::{Digest, Md5};
use wxpay_core::wechat::{sign, xml, SignType};

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
    let mut section = Section::new(
        "5. Micro-benchmarks: a notification's XML parse + signature check vs MD5",
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
    Ok(section)
}
