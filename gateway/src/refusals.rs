//! Bodies refused before any database work (unsigned, a signature that does not
//! verify, a merchant this deployment does not serve and so holds no key to
//! verify with, not a message at all): counted by reason, logged in a truncated,
//! rate-limited line, and never stored. A flood of forged notifications costs a
//! signature check each, not a row.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::metrics::REFUSED_TOTAL;

/// The second of the last refusal log line, and how many were not logged since.
static LAST_LOGGED: AtomicI64 = AtomicI64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// How much of a refused body a log line shows.
const SHOWN_BYTES: usize = 120;

/// Counts and (at most once a second) logs a refused body.
pub fn refused(kind: &'static str, reason: &'static str, body: &[u8]) {
    metrics::counter!(REFUSED_TOTAL, "kind" => kind, "reason" => reason).increment(1);
    let now = chrono::Utc::now().timestamp();
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now > last
        && LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        let shown = String::from_utf8_lossy(&body[..body.len().min(SHOWN_BYTES)]).into_owned();
        tracing::warn!(kind, reason, bytes = body.len(), suppressed, start = %shown.escape_debug(), "notification refused before any database work");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}
