//! Fixtures shared by the tests of every Datacake crate, so no crate keeps its own copy.
//!
//! Tests wait on observable state with a deadline; they never sleep and then assert.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Polls `check` until it returns `true`, panicking with `what` if `timeout` passes first.
///
/// Returns how long the condition took to hold, which tests may print but must never assert
/// on (timings belong in the `benchmarks` crate).
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_for("third call", Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out")]
    async fn panics_when_the_deadline_passes() {
        wait_for("never", Duration::from_millis(20), || async { false }).await;
    }
}
