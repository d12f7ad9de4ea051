//! `--compare`: each figure's change against an earlier run, with regressions marked.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use crate::output::json::{Figure, RunRecord};

/// One metric of one figure in both runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    /// Suite name.
    pub(crate) suite: String,
    /// Scenario of the figure.
    pub(crate) scenario: String,
    /// System of the figure.
    pub(crate) system: String,
    /// Which metric (`"ops/s"`, `"p50 µs"`, a unit).
    pub(crate) metric: String,
    /// Value in the earlier run.
    pub(crate) old: f64,
    /// Value in this run.
    pub(crate) new: f64,
    /// `(new - old) / old` in percent; `None` when `old` is zero.
    pub(crate) percent: Option<f64>,
    /// Whether the metric got worse by more than the threshold.
    pub(crate) regression: bool,
}

/// The metrics of a figure that can be compared: `(name, value, higher is better)`.
fn metrics(figure: &Figure) -> Vec<(String, f64, bool)> {
    let mut out = Vec::new();
    if let Some(ops) = figure.ops_per_sec {
        out.push(("ops/s".to_string(), ops, true));
    }
    if let Some(p50) = figure.p50_us {
        out.push(("p50 µs".to_string(), p50, false));
    }
    if let Some(p99) = figure.p99_us {
        out.push(("p99 µs".to_string(), p99, false));
    }
    if let (Some(v), Some(unit)) = (figure.value, &figure.unit) {
        // Rates ("…/s") are better higher; times, bytes and counts of work better lower.
        out.push((unit.clone(), v, unit.ends_with("/s")));
    }
    out
}

/// Every metric of every figure present in both runs (matched by suite, scenario and
/// system), plus the figures found in only one of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Comparison {
    /// Metrics present in both runs.
    pub(crate) changes: Vec<Change>,
    /// `suite: system · scenario` of figures only in this run.
    pub(crate) only_new: Vec<String>,
    /// `suite: system · scenario` of figures only in the earlier run, for suites that ran now.
    pub(crate) only_old: Vec<String>,
}

impl Comparison {
    /// Compares `new` against `old`, marking changes for the worse beyond `threshold`
    /// percent as regressions.
    pub(crate) fn new(old: &RunRecord, new: &RunRecord, threshold: f64) -> Self {
        let mut out = Self::default();
        let key = |suite: &str, f: &Figure| format!("{suite}: {} · {}", f.system, f.scenario);
        for suite in &new.suites {
            let old_suite = old.suites.iter().find(|s| s.suite == suite.suite);
            for figure in &suite.figures {
                let old_figure = old_suite.and_then(|s| {
                    s.figures
                        .iter()
                        .find(|o| o.scenario == figure.scenario && o.system == figure.system)
                });
                let Some(old_figure) = old_figure else {
                    out.only_new.push(key(&suite.suite, figure));
                    continue;
                };
                let old_metrics = metrics(old_figure);
                for (metric, new_value, higher_is_better) in metrics(figure) {
                    let Some((_, old_value, _)) = old_metrics.iter().find(|m| m.0 == metric) else {
                        continue;
                    };
                    let percent = (*old_value != 0.0)
                        .then(|| (new_value - old_value) / old_value.abs() * 100.0);
                    let regression = percent.is_some_and(|p| {
                        if higher_is_better {
                            p < -threshold
                        } else {
                            p > threshold
                        }
                    });
                    out.changes.push(Change {
                        suite: suite.suite.clone(),
                        scenario: figure.scenario.clone(),
                        system: figure.system.clone(),
                        metric,
                        old: *old_value,
                        new: new_value,
                        percent,
                        regression,
                    });
                }
            }
            if let Some(old_suite) = old_suite {
                for figure in &old_suite.figures {
                    let still = suite
                        .figures
                        .iter()
                        .any(|f| f.scenario == figure.scenario && f.system == figure.system);
                    if !still {
                        out.only_old.push(key(&suite.suite, figure));
                    }
                }
            }
        }
        out
    }

    /// How many metrics regressed.
    pub(crate) fn regressions(&self) -> usize {
        self.changes.iter().filter(|c| c.regression).count()
    }

    /// The comparison as a table.
    pub(crate) fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "suite", "scenario", "system", "metric", "before", "now", "change", "",
        ]);
        for c in &self.changes {
            table.add_row([
                c.suite.clone(),
                c.scenario.clone(),
                c.system.clone(),
                c.metric.clone(),
                number(c.old),
                number(c.new),
                c.percent
                    .map(|p| format!("{p:+.1}%"))
                    .unwrap_or_else(|| "n/a".to_string()),
                if c.regression {
                    "REGRESSION".to_string()
                } else {
                    String::new()
                },
            ]);
        }
        for column in 4..=6 {
            if let Some(column) = table.column_mut(column) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        table
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 100_000.0 {
        crate::report::count(v)
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Profile, RunConfig};
    use crate::output::json::SuiteRecord;
    use crate::report::{Measurement, SuiteReport};

    fn run(figures: Vec<Measurement>) -> RunRecord {
        let mut record = RunRecord::start(&RunConfig::for_profile(Profile::Smoke)).unwrap();
        let report = SuiteReport {
            suite: "rpc",
            measurements: figures,
        };
        record.suites.push(SuiteRecord::new(&report, 1.0));
        record
    }

    #[test]
    fn worse_beyond_the_threshold_is_a_regression_in_either_direction() {
        let old = run(vec![
            Measurement::new("a", "x").with_ops_per_sec(100.0),
            Measurement::new("b", "x").with_value(100.0, "ms"),
            Measurement::new("c", "x").with_ops_per_sec(100.0),
            Measurement::new("gone", "x").with_ops_per_sec(1.0),
        ]);
        let new = run(vec![
            Measurement::new("a", "x").with_ops_per_sec(85.0),
            Measurement::new("b", "x").with_value(105.0, "ms"),
            Measurement::new("c", "x").with_ops_per_sec(150.0),
            Measurement::new("fresh", "x").with_ops_per_sec(1.0),
        ]);
        let cmp = Comparison::new(&old, &new, 10.0);
        let by = |s: &str| cmp.changes.iter().find(|c| c.scenario == s).unwrap();
        assert!(by("a").regression);
        assert_eq!(by("a").percent, Some(-15.0));
        assert!(!by("b").regression, "+5% ms is within 10%");
        assert!(!by("c").regression, "faster is not a regression");
        assert_eq!(cmp.regressions(), 1);
        assert_eq!(cmp.only_new, vec!["rpc: x · fresh"]);
        assert_eq!(cmp.only_old, vec!["rpc: x · gone"]);
        assert!(cmp.table().to_string().contains("REGRESSION"));

        let slower = run(vec![Measurement::new("b", "x").with_value(120.0, "ms")]);
        assert!(Comparison::new(&old, &slower, 10.0).changes[0].regression);
    }
}
