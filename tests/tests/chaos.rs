//! The chaos soak's short seeded run (issue 28): two of each service, the
//! sandbox, a private Postgres behind a proxy that is cut and slowed, a
//! private Redis that is restarted, WeChat answering SYSTEMERROR or hanging,
//! replicas killed with SIGKILL, all under traffic for about a minute and a
//! quarter; after healing, every fen here must agree with WeChat's ledger,
//! every watcher must end on its order's status, every order's events must be
//! one increasing sequence. Any violation fails the test with the report.

use e2e_tests::chaos::{run, ChaosConfig};

/// One deployment of seven processes at a time: two at once on a small CI
/// machine would measure the machine, not the product.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_is_conserved_under_seeded_chaos() {
    let _alone = ONE_AT_A_TIME.lock().await;
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

/// The verdict can fail: a short quiet run, then the soak breaks the money
/// in the database as a bug would (a fen of refund WeChat never gave, a
/// payment WeChat never took, a lost payment event), and the verdict names
/// each broken order with the right kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_names_money_that_does_not_add_up() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut config = ChaosConfig::short(7);
    config.chaos = std::time::Duration::from_secs(12);
    config.fault_every = std::time::Duration::from_secs(3600);
    config.sabotage = true;
    let report = run(config).await.expect("the soak runs");
    eprintln!("{report}");
    assert_eq!(report.sabotaged.len(), 3, "{report}");
    for (no, kind) in &report.sabotaged {
        assert!(
            report
                .violations
                .iter()
                .any(|v| &v.out_trade_no == no && v.kind == *kind),
            "{no} broken as {kind:?} is named:\n{report}"
        );
    }
    assert!(
        report
            .violations
            .iter()
            .all(|v| report.sabotaged.iter().any(|(no, _)| *no == v.out_trade_no)),
        "only the broken orders are named:\n{report}"
    );
}
