//! The driver's smoke mode, end to end: every scenario runs for a few seconds
//! against the local Postgres and Redis and the report is written. It asserts that
//! the driver works and reports every section, never any timing.

use std::process::Command;

#[test]
fn smoke_run_reports_every_scenario() {
    let out = std::env::temp_dir().join(format!("wxpay-bench-smoke-{}.md", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_wxpay-bench"))
        .args(["--smoke", "all", "--out"])
        .arg(&out)
        .status()
        .expect("the driver runs");
    assert!(status.success(), "the smoke run failed: {status}");
    let doc = std::fs::read_to_string(&out).expect("the report was written");
    let _ = std::fs::remove_file(&out);
    for heading in [
        "1. Status delivery",
        "2. Open streams",
        "3. CreateOrder",
        "4. Notifications",
        "5. Micro-benchmarks",
        "7. Operator console",
        "| cores (nproc) |",
    ] {
        assert!(
            doc.contains(heading),
            "the report lacks {heading:?}:\n{doc}"
        );
    }
}

/// The console scenario alone (`cargo test -p wxpay-bench --test smoke console`):
/// 20,000 seeded orders, a handful of requests per page, each of which the
/// driver checks is a 200 holding the row the database says belongs on it.
#[test]
fn console_smoke_run_reports_its_section() {
    let out = std::env::temp_dir().join(format!(
        "wxpay-bench-console-smoke-{}.md",
        std::process::id()
    ));
    let status = Command::new(env!("CARGO_BIN_EXE_wxpay-bench"))
        .args(["--smoke", "console", "--out"])
        .arg(&out)
        .status()
        .expect("the driver runs");
    assert!(status.success(), "the console smoke run failed: {status}");
    let doc = std::fs::read_to_string(&out).expect("the report was written");
    let _ = std::fs::remove_file(&out);
    for line in [
        "7. Operator console on 20,000 orders",
        "| orders, first page |",
        "| orders, second page (the next link) |",
        "| totals, unfiltered |",
        "| dashboard |",
        "first page of 20,000 orders",
    ] {
        assert!(doc.contains(line), "the report lacks {line:?}:\n{doc}");
    }
}
