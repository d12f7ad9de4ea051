//! Captures what code records through the `metrics` facade, so a test can check it.
//!
//! The recorder is installed for the current thread only ([`metrics::with_local_recorder`]):
//! tests running beside each other in the same binary do not see each other's metrics.
//! [`capture_async`] runs a future on a current-thread runtime inside that scope, so every
//! task it spawns records there too (work moved to other threads, e.g. by
//! `spawn_blocking`, is not seen).

use std::future::Future;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use metrics_util::MetricKind;

/// A recorder that keeps every value where a test can read it, as often as it likes: a
/// counter's total, a gauge's last value, every value of a histogram.
#[derive(Clone)]
struct Store(Arc<Registry<Key, AtomicStorage>>);

impl Store {
    fn new() -> Self {
        Self(Arc::new(Registry::atomic()))
    }
}

impl Recorder for Store {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Runs `f` with a recorder installed for this thread; returns its output and what it
/// recorded.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Captured) {
    let store = Store::new();
    let output = metrics::with_local_recorder(&store, f);
    (output, Probe(store).now())
}

/// Reads what has been recorded so far, while the code under test runs (see
/// [`capture_async_probed`]), so a test can wait on a metric with a deadline. Reading takes
/// nothing away.
pub struct Probe(Store);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    /// What has been recorded until now.
    pub fn now(&self) -> Captured {
        let registry = &self.0 .0;
        let entry = |kind, key: &Key, value| {
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
        };
        let mut entries = Vec::new();
        for (key, counter) in registry.get_counter_handles() {
            let value = Value::Counter(counter.load(Ordering::Acquire));
            entries.push(entry(MetricKind::Counter, &key, value));
        }
        for (key, gauge) in registry.get_gauge_handles() {
            let value = Value::Gauge(f64::from_bits(gauge.load(Ordering::Acquire)));
            entries.push(entry(MetricKind::Gauge, &key, value));
        }
        for (key, histogram) in registry.get_histogram_handles() {
            let value = Value::Histogram(histogram.data());
            entries.push(entry(MetricKind::Histogram, &key, value));
        }
        Captured { entries }
    }
}

/// Like [`capture_async`], handing the future a [`Probe`] to read the metrics while it runs.
pub fn capture_async_probed<F, Fut>(f: F) -> (Fut::Output, Captured)
where
    F: FnOnce(Probe) -> Fut,
    Fut: Future,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime");
    let store = Store::new();
    let inner = Probe(store.clone());
    let output = metrics::with_local_recorder(&store, || {
        let output = runtime.block_on(f(inner));
        // Tasks still running record into this recorder until they are dropped here.
        drop(runtime);
        output
    });
    (output, Probe(store).now())
}

/// Runs `fut` to completion on a fresh current-thread runtime (time and I/O enabled) with a
/// recorder installed; returns its output and what it and the tasks it spawned recorded.
pub fn capture_async<F: Future>(fut: F) -> (F::Output, Captured) {
    capture_async_probed(|_| fut)
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

#[derive(Debug)]
struct Entry {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: Value,
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
                Value::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// The value of the first matching gauge, if one was recorded.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(MetricKind::Gauge, name, labels)
            .find_map(|e| match &e.value {
                Value::Gauge(v) => Some(*v),
                _ => None,
            })
    }

    /// Every value recorded in the matching histograms.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, labels)
            .flat_map(|e| match &e.value {
                Value::Histogram(values) => values.clone(),
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
