//! Suite `rpc`: datacake-rpc against a raw tokio TCP baseline on loopback.

use crate::report::SuiteReport;

/// Runs the suite.
pub(crate) async fn run() -> anyhow::Result<SuiteReport> {
    Ok(SuiteReport { suite: "rpc", measurements: Vec::new() })
}
