//! The chaos soak's short seeded run (issue 28): two of each service, the
//! sandbox, a private Postgres behind a proxy that is cut and slowed, a
//! private Redis that is restarted, WeChat answering SYSTEMERROR or hanging,
//! replicas killed with SIGKILL, all under traffic for about a minute and a
//! quarter; after healing, every fen here must agree with WeChat's ledger,
//! every watcher must end on its order's status, every order's events must be
//! one increasing sequence. Any violation fails the test with the report.

use e2e_tests::chaos::{run, ChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_is_conserved_under_seeded_chaos() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(28);
    let report = run(ChaosConfig::short(seed)).await.expect("the soak runs");
    eprintln!("{report}");
    assert!(
        report.faults.iter().map(|(_, n)| n).sum::<u64>() >= 8,
        "a short run still injects faults of several kinds:\n{report}"
    );
    assert!(
        report.paid_at_wechat >= 20,
        "enough money moved to mean something:\n{report}"
    );
    assert!(
        report.violations.is_empty() && report.converged_after.is_some(),
        "money under chaos:\n{report}"
    );
}
