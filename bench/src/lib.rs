//! wxpay-bench: the benchmark driver. It starts the real services in this process
//! on port 0 (payment-service, gateway, poller, the WeChat sandbox) over real
//! loopback sockets, or the poller as a child process where its memory must be
//! measured alone, and measures every compared pair side by side in the same run
//! so that ratios hold on whatever machine runs it. `main` parses the command
//! line; each scenario lives in its own module under `scenarios`; `report` turns
//! the figures into the printed table and `docs/BENCHMARKS.md`.

pub mod counting;
pub mod machine;
pub mod measure;
pub mod notification;
pub mod notification_v3;
pub mod report;
pub mod scenarios;
pub mod stack;

/// How big a run is: `Full` is the documented run (a few minutes on 2 cores),
/// `Smoke` the seconds-long run CI uses to keep the driver working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Smoke,
}

static ONLY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Restricts create/notify to the named parts (`--only service,duplicates`), so a
/// profiler attached to the run sees one path at a time. Set once, before the run.
pub fn set_only(parts: Vec<String>) {
    let _ = ONLY.set(parts);
}

/// Whether this run measures `part` (every part unless `--only` named others).
pub fn runs(part: &str) -> bool {
    ONLY.get().is_none_or(|p| p.iter().any(|x| x == part))
}

/// The numbers among `--only`'s parts (client counts, stream levels), if any.
pub fn only_numbers() -> Option<Vec<usize>> {
    let mut n: Vec<usize> = ONLY.get()?.iter().filter_map(|p| p.parse().ok()).collect();
    n.sort_unstable();
    (!n.is_empty()).then_some(n)
}
