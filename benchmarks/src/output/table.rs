//! The summary table printed to stdout after each suite.

use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use crate::report::{count, SuiteReport};

/// The table of every figure in `report`.
pub(crate) fn suite_table(report: &SuiteReport) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "scenario",
            "system",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "other",
            "vs baseline",
            "target",
        ]);
    for m in &report.measurements {
        table.add_row([
            m.scenario.clone(),
            m.system.clone(),
            m.ops_per_sec.map(count).unwrap_or_default(),
            m.latency.map(|l| duration(l.p50)).unwrap_or_default(),
            m.latency.map(|l| duration(l.p99)).unwrap_or_default(),
            m.latency.map(|l| duration(l.p999)).unwrap_or_default(),
            m.value.map(|(v, unit)| value(v, unit)).unwrap_or_default(),
            m.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default(),
            m.target.clone().unwrap_or_default(),
        ]);
    }
    for column in 2..=7 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A latency with three significant-ish digits: `812ns`, `48.3µs`, `1.25ms`.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// A scalar figure with its unit.
pub(crate) fn value(v: f64, unit: &str) -> String {
    if v.abs() >= 100_000.0 {
        format!("{} {unit}", count(v))
    } else {
        format!("{v:.2} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Measurement};

    #[test]
    fn every_figure_has_a_row() {
        let mut samples = vec![Duration::from_micros(48), Duration::from_micros(900)];
        let report = SuiteReport {
            suite: "rpc",
            measurements: vec![
                Measurement::new("echo", "raw-tcp").with_ops_per_sec(250_000.0),
                Measurement::new("echo", "datacake-rpc")
                    .with_ops_per_sec(200_000.0)
                    .with_latency(Latency::from_samples(&mut samples))
                    .with_ratio(0.8)
                    .with_target(">= 0.75x raw"),
            ],
        };
        let text = suite_table(&report).to_string();
        assert!(text.contains("250k"), "{text}");
        assert!(text.contains("48.0µs"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
        assert_eq!(text.matches("900.0µs").count(), 2, "p99 and p99.9: {text}");
        assert!(text.contains("0.80x"), "{text}");
        assert!(text.contains(">= 0.75x raw"), "{text}");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(Duration::from_nanos(812)), "812ns");
        assert_eq!(duration(Duration::from_micros(1_250)), "1.25ms");
    }
}
