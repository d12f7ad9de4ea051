//! The load generator: `concurrency` closed-loop workers, each on its own kept-alive HTTP/1.1
//! connection to one node (worker `i` talks to node `i mod n`), each issuing a seeded random
//! mix of PUT, GET and DELETE on a fixed key space at one consistency level, until a deadline
//! or a stop signal.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::http::Connection;
use crate::report::Latency;

/// The keyspace every request uses.
pub(crate) const KEYSPACE: &str = "bench";

/// How long a request may take before the worker gives up on it (and its connection).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long a worker waits before reconnecting after a failure (so a dead node is not
/// hammered with connection attempts, and each attempt counts as one error).
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Shares of each operation, in percent of requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mix {
    /// PUT share.
    pub(crate) put: u32,
    /// GET share.
    pub(crate) get: u32,
    /// DELETE share (the rest).
    pub(crate) delete: u32,
}

impl Mix {
    /// 50% PUT, 40% GET, 10% DELETE.
    pub(crate) const DEFAULT: Mix = Mix {
        put: 50,
        get: 40,
        delete: 10,
    };

    fn pick(self, rng: &mut StdRng) -> &'static str {
        let roll = rng.random_range(0..self.put + self.get + self.delete);
        if roll < self.put {
            "PUT"
        } else if roll < self.put + self.get {
            "GET"
        } else {
            "DELETE"
        }
    }
}

/// What load to apply.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    /// The nodes' HTTP addresses.
    pub(crate) targets: Vec<SocketAddr>,
    /// Workers (connections).
    pub(crate) concurrency: usize,
    /// The `consistency` query value, e.g. `"quorum"`.
    pub(crate) level: String,
    /// The operation mix.
    pub(crate) mix: Mix,
    /// Keys are `k0` .. `k{keys-1}`, drawn uniformly.
    pub(crate) keys: u64,
    /// Bytes of each PUT's value.
    pub(crate) value_len: usize,
    /// Seed of the workers' random choices (worker `i` uses `seed + i`).
    pub(crate) seed: u64,
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Requests answered with success (2xx, or 404 for a GET of an absent key).
    pub(crate) ok: u64,
    /// Wall time from the start signal until the last worker stopped.
    pub(crate) elapsed: Duration,
    /// Latency of the successful requests.
    pub(crate) latency: Option<Latency>,
    /// Failed requests by kind (`"connect: refused"`, `"http 503 not_enough_nodes"`, ...).
    pub(crate) errors: BTreeMap<String, u64>,
    /// When the last failed request failed.
    pub(crate) last_failure: Option<Instant>,
}

impl LoadResult {
    /// Successful requests per second.
    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Every failed request.
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A running load: stop it with [`Load::stop`], then collect it with [`Load::finish`].
#[derive(Debug)]
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    /// Successful requests so far (for progress reports).
    done: Arc<AtomicU64>,
    started: Instant,
    workers: Vec<tokio::task::JoinHandle<Worker>>,
}

/// One worker's tally.
#[derive(Debug, Default)]
struct Worker {
    samples: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    last_failure: Option<Instant>,
}

impl Worker {
    fn fail(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.last_failure = Some(Instant::now());
    }
}

impl Load {
    /// Opens every worker's connection, then starts them all at once. Workers whose node
    /// cannot be reached start anyway and keep trying (each attempt counts as an error).
    pub(crate) async fn start(spec: &LoadSpec) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let go = Arc::new(tokio::sync::Barrier::new(spec.concurrency + 1));
        let value = Arc::new(vec![b'v'; spec.value_len]);
        let mut workers = Vec::with_capacity(spec.concurrency);
        for i in 0..spec.concurrency {
            let addr = spec.targets[i % spec.targets.len()];
            let (stop, done, go, value) = (stop.clone(), done.clone(), go.clone(), value.clone());
            let spec = spec.clone();
            workers.push(tokio::spawn(async move {
                let mut tally = Worker::default();
                let mut conn = match Connection::open(addr, REQUEST_DEADLINE).await {
                    Ok(conn) => Some(conn),
                    Err(failure) => {
                        tally.fail(failure.kind());
                        None
                    }
                };
                go.wait().await;
                let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(i as u64));
                let query = format!("?consistency={}", spec.level);
                let mut path = String::with_capacity(64);
                while !stop.load(Ordering::Relaxed) {
                    let method = spec.mix.pick(&mut rng);
                    let key = rng.random_range(0..spec.keys);
                    path.clear();
                    // Writing into a String cannot fail.
                    let _ = write!(path, "/{KEYSPACE}/k{key}{query}");
                    let body: &[u8] = if method == "PUT" { &value } else { b"" };
                    let began = Instant::now();
                    let connected = match conn.take() {
                        Some(c) => Ok(c),
                        None => Connection::open(addr, REQUEST_DEADLINE).await,
                    };
                    let outcome = match connected {
                        Ok(mut c) => match c.request(method, &path, body, REQUEST_DEADLINE).await {
                            Ok((reply, keep)) => {
                                if keep {
                                    conn = Some(c);
                                }
                                Ok(reply)
                            }
                            Err(failure) => Err(failure),
                        },
                        Err(failure) => Err(failure),
                    };
                    match outcome {
                        Ok(reply) if success(method, reply.status) => {
                            tally.samples.push(began.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply) => {
                            tally.fail(format!("http {} {}", reply.status, reply.error_code()))
                        }
                        Err(failure) => {
                            tally.fail(failure.kind());
                            tokio::time::sleep(RECONNECT_PAUSE).await;
                        }
                    }
                }
                tally
            }));
        }
        go.wait().await;
        Self {
            stop,
            done,
            started: Instant::now(),
            workers,
        }
    }

    /// Successful requests so far.
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Tells every worker to stop after its current request.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the workers, waits for them and sums their tallies.
    pub(crate) async fn finish(self) -> anyhow::Result<LoadResult> {
        self.stop();
        let mut samples = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut last_failure = None;
        for worker in self.workers {
            let tally = worker.await?;
            samples.extend(tally.samples);
            last_failure = last_failure.max(tally.last_failure);
            for (kind, n) in tally.errors {
                *errors.entry(kind).or_default() += n;
            }
        }
        let elapsed = self.started.elapsed();
        Ok(LoadResult {
            ok: samples.len() as u64,
            elapsed,
            latency: Latency::from_samples(&mut samples),
            errors,
            last_failure,
        })
    }
}

/// Runs `spec` for `duration`, reporting progress through `tick` every 250 ms.
pub(crate) async fn run_for(
    spec: &LoadSpec,
    duration: Duration,
    mut tick: impl FnMut(u64),
) -> anyhow::Result<LoadResult> {
    let load = Load::start(spec).await;
    let end = load.started + duration;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        tick(load.done());
    }
    load.finish().await
}

/// Whether `status` answers `method` successfully: 2xx, or 404 for a GET (an absent key is
/// an answer, not a failure).
fn success(method: &str, status: u16) -> bool {
    (200..300).contains(&status) || (method == "GET" && status == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_its_shares_and_its_seed() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = BTreeMap::new();
        for _ in 0..10_000 {
            *counts.entry(Mix::DEFAULT.pick(&mut rng)).or_insert(0u32) += 1;
        }
        let share = |m: &str| counts[m] as f64 / 10_000.0;
        assert!((share("PUT") - 0.5).abs() < 0.03, "{counts:?}");
        assert!((share("GET") - 0.4).abs() < 0.03, "{counts:?}");
        assert!((share("DELETE") - 0.1).abs() < 0.03, "{counts:?}");
        let draws = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| Mix::DEFAULT.pick(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
    }

    #[test]
    fn a_get_of_an_absent_key_is_a_success() {
        assert!(success("GET", 404));
        assert!(!success("PUT", 404));
        assert!(success("PUT", 204));
        assert!(!success("GET", 503));
    }
}
