//! What a suite measures, in one shape every suite shares, so the harness can print, store and
//! compare any figure the same way.

use std::fmt;
use std::time::{Duration, Instant};

/// Latency percentiles of one measured cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50: Duration,
    /// 99th percentile.
    pub(crate) p99: Duration,
    /// 99.9th percentile.
    pub(crate) p999: Duration,
    /// Largest sample.
    pub(crate) max: Duration,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place). `None` when there are no samples.
    pub(crate) fn from_samples(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let idx = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[idx]
        };
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        })
    }
}

/// One figure (a cell of a suite's table).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    /// What was measured, e.g. `"echo 64 B, 64 in flight"`.
    pub(crate) scenario: String,
    /// Which implementation produced it, e.g. `"raw-tcp"` (a baseline) or `"datacake-rpc"`.
    pub(crate) system: String,
    /// Operations per second, where the scenario measures throughput.
    pub(crate) ops_per_sec: Option<f64>,
    /// Latency percentiles, where the scenario measures latency.
    pub(crate) latency: Option<Latency>,
    /// Any other scalar figure with its unit, e.g. `(250.0, "ms")` or `(31.2, "bytes/key")`.
    pub(crate) value: Option<(f64, &'static str)>,
    /// This figure divided by the baseline's same figure in the same run (for throughput,
    /// `ours / baseline`; for latency, the p50 ratio `ours / baseline`).
    pub(crate) ratio: Option<f64>,
    /// The goal this figure is held to, in words (e.g. `">= 30M stamps/s"`), if any.
    pub(crate) target: Option<String>,
    /// Where this figure sits on a throughput chart, if it belongs to a series.
    pub(crate) point: Option<Point>,
}

/// A figure's place on a chart of throughput against a swept parameter (e.g. calls in
/// flight): which line it belongs to and its x value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// The line, e.g. `"datacake-rpc"` or `"3 nodes, ALL, Put"`.
    pub(crate) line: String,
    /// What the x axis counts, e.g. `"calls in flight"`.
    pub(crate) x_label: &'static str,
    /// The x value.
    pub(crate) x: f64,
}

impl Measurement {
    /// A measurement with only its labels set; fill in the figures with the `with_*` methods.
    pub(crate) fn new(scenario: impl Into<String>, system: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            system: system.into(),
            ops_per_sec: None,
            latency: None,
            value: None,
            ratio: None,
            target: None,
            point: None,
        }
    }

    /// Sets the throughput.
    pub(crate) fn with_ops_per_sec(mut self, ops: f64) -> Self {
        self.ops_per_sec = Some(ops);
        self
    }

    /// Sets the latency percentiles.
    pub(crate) fn with_latency(mut self, latency: Option<Latency>) -> Self {
        self.latency = latency;
        self
    }

    /// Sets a scalar figure with its unit.
    pub(crate) fn with_value(mut self, value: f64, unit: &'static str) -> Self {
        self.value = Some((value, unit));
        self
    }

    /// Sets the ratio against the baseline.
    pub(crate) fn with_ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self
    }

    /// Places the figure on line `line` of the suite's throughput chart, at `x`.
    pub(crate) fn with_point(
        mut self,
        line: impl Into<String>,
        x_label: &'static str,
        x: f64,
    ) -> Self {
        self.point = Some(Point {
            line: line.into(),
            x_label,
            x,
        });
        self
    }

    /// Sets the target in words.
    pub(crate) fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<44} {:<14}", self.scenario, self.system)?;
        if let Some(ops) = self.ops_per_sec {
            write!(f, " {ops:>12.0} ops/s")?;
        }
        if let Some(l) = &self.latency {
            write!(
                f,
                " p50 {:>9.1?} p99 {:>9.1?} p99.9 {:>9.1?}",
                l.p50, l.p99, l.p999
            )?;
        }
        if let Some((v, unit)) = self.value {
            write!(f, " {v:>12.2} {unit}")?;
        }
        if let Some(r) = self.ratio {
            write!(f, "  ({r:.2}x baseline)")?;
        }
        if let Some(t) = &self.target {
            write!(f, "  [target {t}]")?;
        }
        Ok(())
    }
}

/// A count in short form for labels: `1000000.0` gives `"1M"`, `12500.0` gives `"12.5k"`,
/// `950.0` gives `"950"`.
pub(crate) fn count(n: f64) -> String {
    let (scaled, suffix) = if n.abs() >= 1e9 {
        (n / 1e9, "G")
    } else if n.abs() >= 1e6 {
        (n / 1e6, "M")
    } else if n.abs() >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    let text = format!("{scaled:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{suffix}")
}

/// The figures of one suite run.
#[derive(Debug, Clone, Default)]
pub(crate) struct SuiteReport {
    /// Suite name, e.g. `"rpc"`.
    pub(crate) suite: &'static str,
    /// Every figure, in the order measured.
    pub(crate) measurements: Vec<Measurement>,
}

/// Operations per second of `f` called `n` times (after a short warm-up).
pub(crate) fn ops_per_sec(n: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 20 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The median of `values` (the mean of the middle two for an even count; 0 if empty).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median over rounds of `ours[r] / base[r]`: each pair ran back to back in one round,
/// so a slow phase of the machine falls on both sides of most pairs.
pub(crate) fn paired_ratio(ours: &[f64], base: &[f64]) -> f64 {
    median(
        ours.iter()
            .zip(base)
            .map(|(ours, base)| ours / base.max(1e-9))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn the_paired_ratio_compares_rounds_pairwise() {
        // A slow phase in rounds 2 and 3 hits both cells; pairwise the ratio is 0.9 each time.
        let base = [100.0, 50.0, 50.0, 100.0];
        let ours = [90.0, 45.0, 45.0, 90.0];
        assert!((paired_ratio(&ours, &base) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn percentiles_pick_the_right_samples() {
        let mut samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        samples.reverse();
        let l = Latency::from_samples(&mut samples).unwrap();
        assert_eq!(l.p50, Duration::from_micros(500));
        assert_eq!(l.p99, Duration::from_micros(990));
        assert_eq!(l.p999, Duration::from_micros(999));
        assert_eq!(l.max, Duration::from_micros(1000));
        assert!(Latency::from_samples(&mut []).is_none());
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(count(1_000_000.0), "1M");
        assert_eq!(count(20_000_000.0), "20M");
        assert_eq!(count(12_500.0), "12.5k");
        assert_eq!(count(950.0), "950");
        assert_eq!(count(2_048.0), "2k");
    }
}
