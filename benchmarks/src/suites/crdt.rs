//! Suite `crdt`: clock stamp throughput and OR-set merge cost.

use crate::report::SuiteReport;

/// Runs the suite.
pub(crate) fn run() -> anyhow::Result<SuiteReport> {
    Ok(SuiteReport { suite: "crdt", measurements: Vec::new() })
}
