//! Waiting for an outcome the way a test must: polling with a bounded
//! deadline, never a fixed sleep that hopes long enough.

use std::time::Duration;

/// Polls `check` every 100 ms for up to 30 s; panics naming `what` if it never holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 30 s: {what}");
}
