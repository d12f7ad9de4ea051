//! Suite `sqlite`: `SqliteStorage` on disk (WAL, `synchronous = NORMAL`, group commit), with
//! 128-byte documents: single puts from one caller (throughput and latency) and from 64
//! concurrent callers, 1,000-document bulk puts, and single gets.

use std::path::Path;
use std::time::{Duration, Instant};

use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::{Document, Storage};
use datacake_sqlite::SqliteStorage;

use crate::config::RunConfig;
use crate::report::{Latency, Measurement, SuiteReport};

/// Concurrent callers of the concurrent cell.
const CALLERS: u64 = 64;
/// Documents per bulk put.
const BULK_SIZE: u64 = 1_000;
/// Bytes per document.
const DOC_BYTES: usize = 128;
const SYSTEM: &str = "datacake-sqlite";

fn doc(id: u64) -> Document {
    Document::new(
        id,
        HLCTimestamp::new(1_000 + id, 0, 1),
        vec![b'x'; DOC_BYTES],
    )
}

fn per_sec(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// Runs the suite in a fresh database under the system temp dir (removed afterwards).
///
/// Single puts (and gets) per cell and bulk batches scale with the profile: 640 and 3 for
/// `--smoke`, 20,000 and 50 otherwise.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let single_puts = cfg.pick(640, 20_000, 20_000);
    let bulk_batches = cfg.pick(3, 50, 50);
    let dir = std::env::temp_dir().join(format!("datacake-bench-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir.join("bench.db"), single_puts, bulk_batches).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(path: &Path, single_puts: u64, bulk_batches: u64) -> anyhow::Result<SuiteReport> {
    let storage = SqliteStorage::open(path).await?;
    let mut measurements = Vec::new();

    let mut samples = Vec::with_capacity(single_puts as usize);
    let start = Instant::now();
    for id in 0..single_puts {
        let put = Instant::now();
        storage.put("single", doc(id)).await?;
        samples.push(put.elapsed());
    }
    measurements.push(
        Measurement::new("single puts, 1 caller", SYSTEM)
            .with_ops_per_sec(per_sec(single_puts, start.elapsed()))
            .with_latency(Latency::from_samples(&mut samples)),
    );

    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|task| {
            let storage = storage.clone();
            tokio::spawn(async move {
                for i in 0..single_puts / CALLERS {
                    storage
                        .put("concurrent", doc(task * single_puts + i))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    measurements.push(
        Measurement::new(format!("single puts, {CALLERS} callers"), SYSTEM)
            .with_ops_per_sec(per_sec(single_puts / CALLERS * CALLERS, start.elapsed())),
    );

    let mut samples = Vec::with_capacity(bulk_batches as usize);
    let start = Instant::now();
    for batch in 0..bulk_batches {
        let docs = (batch * BULK_SIZE..(batch + 1) * BULK_SIZE)
            .map(doc)
            .collect();
        let put = Instant::now();
        storage.multi_put("bulk", docs).await?;
        samples.push(put.elapsed());
    }
    let elapsed = start.elapsed();
    measurements.push(
        Measurement::new(format!("bulk puts of {BULK_SIZE} docs (docs/s)"), SYSTEM)
            .with_ops_per_sec(per_sec(bulk_batches * BULK_SIZE, elapsed))
            .with_value(per_sec(bulk_batches, elapsed), "batches/s")
            .with_latency(Latency::from_samples(&mut samples)),
    );

    let start = Instant::now();
    for id in 0..single_puts {
        anyhow::ensure!(storage.get("single", id).await?.is_some(), "lost {id}");
    }
    measurements.push(
        Measurement::new("single gets, 1 caller", SYSTEM)
            .with_ops_per_sec(per_sec(single_puts, start.elapsed())),
    );

    Ok(SuiteReport {
        suite: "sqlite",
        measurements,
    })
}
