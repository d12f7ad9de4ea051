//! Captures what code records through the `metrics` facade, so a test can check it.
//!
//! The recorder is installed for the current thread only ([`metrics::with_local_recorder`]):
//! tests running beside each other in the same binary do not see each other's metrics.
//! [`capture_async`] runs a future on a current-thread runtime inside that scope, so every
//! task it spawns records there too (work moved to other threads, e.g. by
//! `spawn_blocking`, is not seen).

use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

/// Runs `f` with a recorder installed for this thread; returns its output and what it
/// recorded.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Captured) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let output = metrics::with_local_recorder(&recorder, f);
    let entries = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, _description, value)| {
            let (kind, key) = key.into_parts();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            Entry {
                kind,
                name: key.name().to_owned(),
                labels,
                value,
            }
        })
        .collect();
    (output, Captured { entries })
}

/// Runs `fut` to completion on a fresh current-thread runtime (time and I/O enabled) with a
/// recorder installed; returns its output and what it and the tasks it spawned recorded.
pub fn capture_async<F: Future>(fut: F) -> (F::Output, Captured) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime");
    capture(|| {
        let output = runtime.block_on(fut);
        // Tasks still running record into this recorder until they are dropped here.
        drop(runtime);
        output
    })
}

#[derive(Debug)]
struct Entry {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

/// The metrics recorded inside [`capture`] or [`capture_async`].
///
/// Each query takes a metric's name and labels to match: a series matches if it has every
/// label given (and possibly more), so `&[]` matches all series of the name.
#[derive(Debug)]
pub struct Captured {
    entries: Vec<Entry>,
}

impl Captured {
    fn matching<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| {
            e.kind == kind
                && e.name == name
                && labels
                    .iter()
                    .all(|(k, v)| e.labels.iter().any(|(ek, ev)| ek == k && ev == v))
        })
    }

    /// The sum of the matching counters (0 if none was recorded).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(MetricKind::Counter, name, labels)
            .map(|e| match &e.value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// The value of the first matching gauge, if one was recorded.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(MetricKind::Gauge, name, labels)
            .find_map(|e| match &e.value {
                DebugValue::Gauge(v) => Some(v.into_inner()),
                _ => None,
            })
    }

    /// Every value recorded in the matching histograms.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, labels)
            .flat_map(|e| match &e.value {
                DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The distinct values `label` takes among the series of `name` (any kind), sorted.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.name == name)
            .flat_map(|e| e.labels.iter().filter(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// The names of every series recorded, sorted and without repeats (for failure messages).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_what_the_closure_records() {
        let ((), captured) = capture(|| {
            metrics::counter!("c_total", "level" => "one").increment(2);
            metrics::gauge!("g").set(3.0);
            metrics::histogram!("h_seconds").record(0.5);
        });
        assert_eq!(captured.counter("c_total", &[("level", "one")]), 2);
        assert_eq!(captured.counter("c_total", &[("level", "two")]), 0);
        assert_eq!(captured.gauge("g", &[]), Some(3.0));
        assert_eq!(captured.histogram("h_seconds", &[]), vec![0.5]);
        assert_eq!(captured.label_values("c_total", "level"), vec!["one"]);
    }

    #[test]
    fn captures_what_spawned_tasks_record() {
        let ((), captured) = capture_async(async {
            tokio::spawn(async { metrics::counter!("spawned_total").increment(1) })
                .await
                .unwrap();
        });
        assert_eq!(captured.counter("spawned_total", &[]), 1);
    }
}
