//! Fixtures shared by the tests of every Datacake crate, so no crate keeps its own copy.
//!
//! Tests wait on observable state with a deadline; they never sleep and then assert.
//! [`linearizability`] checks recorded histories of concurrent calls against a sequential
//! model.
//!
//! With the `server` feature, fixtures for the tests of server binaries (the examples):
//! [`process`] starts, signals and kills processes and finds free ports; [`http`] is a raw
//! HTTP/1.1 client that also sends malformed or partial requests.
//!
//! With the `node` feature, [`node::start`] and [`node::builder`]: cluster nodes on loopback
//! that gossip fast.
//!
//! With the `metrics` feature, [`metrics::capture`] and [`metrics::capture_async`] record
//! what code reports through the `metrics` facade, for tests that check it.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(feature = "server")]
pub mod http;
pub mod linearizability;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "server")]
pub mod process;

/// `n` distinct free loopback ports (bound together on `127.0.0.1:0`, then released): for a
/// server that needs its port before it starts, or an address nothing listens on.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

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

/// Polls `probe` until it yields a value (like [`wait_for`], panicking with `what` if
/// `timeout` passes first), and returns it.
pub async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A fresh directory under the system temp dir, removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep_on_failure: bool,
}

impl TempDir {
    /// A new empty directory whose name starts with `datacake-{name}-` and is unique to this
    /// process and moment.
    pub fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after epoch")
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("datacake-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self {
            path,
            keep_on_failure: false,
        }
    }

    /// Keeps the directory (and says where it is) when dropped during a panic, i.e. when the
    /// test fails, so its logs and data can be read.
    #[must_use]
    pub fn keep_on_failure(mut self) -> Self {
        self.keep_on_failure = true;
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, file: impl AsRef<Path>) -> PathBuf {
        self.path.join(file)
    }

    /// Writes `text` to the file `name` in the directory and returns its path as a string
    /// (for a command-line argument).
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep_on_failure && std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
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

    #[test]
    fn a_temp_dir_is_fresh_and_removed_on_drop() {
        let dir = TempDir::new("helper");
        std::fs::write(dir.join("f"), b"x").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.join("f").exists());
        let other = TempDir::new("helper");
        assert_ne!(other.path(), path);
        drop(dir);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn returns_the_first_value_found() {
        let mut calls = 0;
        let value = wait_for_value("third call", Duration::from_secs(5), || {
            calls += 1;
            let found = (calls == 3).then_some(calls);
            async move { found }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out")]
    async fn panics_when_the_deadline_passes() {
        wait_for("never", Duration::from_millis(20), || async { false }).await;
    }
}
