//! Suite `crdt`: clock stamp throughput, OR-set merge cost and OR-set memory per key, each
//! beside a baseline measured in the same run.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use datacake_crdt::{HLCTimestamp, OrSWotSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::alloc::allocated_bytes;
use crate::config::RunConfig;
use crate::report::{count, ops_per_sec, Measurement, SuiteReport};

/// The suite's sizes for one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Stamps issued per throughput run.
    stamps: u64,
    /// Keys per set in the merge and memory scenarios.
    keys: usize,
    /// Seed of every random key and timestamp in the suite.
    seed: u64,
}

/// Runs the suite.
pub(crate) fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let sizes = Sizes {
        stamps: cfg.pick(200_000, 20_000_000, 20_000_000),
        keys: cfg.pick(10_000, 1_000_000, 1_000_000),
        seed: cfg.seed,
    };
    let mut measurements = Vec::new();
    cfg.progress.scenario("clock stamps per second");
    measurements.extend(send_throughput(sizes)?);
    cfg.progress.scenario("OR-set memory per key");
    measurements.extend(memory_per_key(sizes));
    cfg.progress.scenario("OR-set merge");
    measurements.extend(merge_time(sizes));
    Ok(SuiteReport {
        suite: "crdt",
        measurements,
    })
}

fn send_throughput(sizes: Sizes) -> anyhow::Result<Vec<Measurement>> {
    let scenario = "HLC send(), one thread".to_string();
    let mut clock = HLCTimestamp::now(1);
    let mut failed = None;
    let ours = ops_per_sec(sizes.stamps, || {
        if let Err(e) = clock.send() {
            failed = Some(e);
        }
        black_box(&clock);
    });
    if let Some(e) = failed {
        anyhow::bail!("send() failed during the benchmark: {e}");
    }
    let wall = ops_per_sec(sizes.stamps, || {
        black_box(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .ok(),
        );
    });
    let counter = AtomicU64::new(0);
    let atomic = ops_per_sec(sizes.stamps, || {
        black_box(counter.fetch_add(1, Ordering::Relaxed));
    });
    Ok(vec![
        Measurement::new(&scenario, "SystemTime::now")
            .with_ops_per_sec(wall)
            .with_target("baseline: one wall-clock read"),
        Measurement::new(&scenario, "AtomicU64 add")
            .with_ops_per_sec(atomic)
            .with_target("baseline: a bare counter"),
        Measurement::new(&scenario, "datacake-crdt")
            .with_ops_per_sec(ours)
            .with_ratio(ours / wall)
            .with_target(">= 30M stamps/s"),
    ])
}

fn random_entries(rng: &mut StdRng, n: usize) -> Vec<(u64, HLCTimestamp)> {
    (0..n)
        .map(|_| {
            let ts = HLCTimestamp::new(
                rng.random_range(1_700_000_000_000..1_700_000_600_000),
                rng.random(),
                rng.random_range(0..16),
            );
            (rng.random(), ts)
        })
        .collect()
}

fn random_set(rng: &mut StdRng, n: usize) -> OrSWotSet {
    let mut set = OrSWotSet::new();
    for (key, ts) in random_entries(rng, n) {
        set.insert(key, ts);
    }
    set
}

fn random_map(rng: &mut StdRng, n: usize) -> HashMap<u64, HLCTimestamp> {
    random_entries(rng, n).into_iter().collect()
}

fn memory_per_key(sizes: Sizes) -> Vec<Measurement> {
    let scenario = format!(
        "memory per live key, {} random keys",
        count(sizes.keys as f64)
    );
    let mut rng = StdRng::seed_from_u64(sizes.seed);
    let entries = random_entries(&mut rng, sizes.keys);

    let before = allocated_bytes();
    let mut map: HashMap<u64, HLCTimestamp> = HashMap::new();
    for (key, ts) in &entries {
        map.insert(*key, *ts);
    }
    let map_bytes = allocated_bytes().saturating_sub(before) as f64 / map.len() as f64;
    drop(map);

    let before = allocated_bytes();
    let mut set = OrSWotSet::<1>::new();
    for (key, ts) in &entries {
        set.insert(*key, *ts);
    }
    let set_bytes = allocated_bytes().saturating_sub(before) as f64 / set.len() as f64;
    drop(set);

    vec![
        Measurement::new(&scenario, "std HashMap")
            .with_value(map_bytes, "bytes/key")
            .with_target("baseline"),
        Measurement::new(&scenario, "datacake-crdt")
            .with_value(set_bytes, "bytes/key")
            .with_ratio(set_bytes / map_bytes)
            .with_target("<= 32 bytes/key"),
    ]
}

fn merge_time(sizes: Sizes) -> Vec<Measurement> {
    let scenario = format!("merge two sets of {} random keys", count(sizes.keys as f64));
    let mut rng = StdRng::seed_from_u64(sizes.seed ^ 1);
    let (a, b) = (
        random_map(&mut rng, sizes.keys),
        random_map(&mut rng, sizes.keys),
    );
    let start = Instant::now();
    let mut merged = a;
    for (key, ts) in b {
        merged
            .entry(key)
            .and_modify(|mine| *mine = (*mine).max(ts))
            .or_insert(ts);
    }
    let map_ms = start.elapsed().as_secs_f64() * 1e3;
    black_box(&merged);
    drop(merged);

    let mut rng = StdRng::seed_from_u64(sizes.seed ^ 1);
    let (mut a, b) = (
        random_set(&mut rng, sizes.keys),
        random_set(&mut rng, sizes.keys),
    );
    let start = Instant::now();
    a.merge(b);
    let set_ms = start.elapsed().as_secs_f64() * 1e3;
    black_box(&a);

    vec![
        Measurement::new(&scenario, "std HashMap")
            .with_value(map_ms, "ms")
            .with_target("baseline: naive entry-wise merge"),
        Measurement::new(&scenario, "datacake-crdt")
            .with_value(set_ms, "ms")
            .with_ratio(set_ms / map_ms)
            .with_target("< 300 ms"),
    ]
}
