//! Throughput of `SqliteStorage` on disk (WAL, `synchronous = NORMAL`): single puts from one
//! caller, single puts from 8 and 64 concurrent callers, 1,000-document bulk puts, and single gets.
//!
//! ```text
//! cargo run --release -p datacake-sqlite --example throughput [-- <directory>]
//! ```
//!
//! The database is created in `<directory>` (default: the system temp dir) and removed after.

use std::time::{Duration, Instant};

use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::{Document, Storage};
use datacake_sqlite::SqliteStorage;

const SINGLE_PUTS: u64 = 20_000;
const CONCURRENT_TASKS: [u64; 2] = [8, 64];
const BULK_SIZE: u64 = 1_000;
const BULK_BATCHES: u64 = 50;
const DOC_BYTES: usize = 128;

fn doc(id: u64) -> Document {
    Document::new(
        id,
        HLCTimestamp::new(1_000 + id, 0, 1),
        vec![b'x'; DOC_BYTES],
    )
}

fn report(what: &str, ops: u64, elapsed: Duration) {
    println!(
        "{what:<44} {ops:>8} ops in {:>8.3} s = {:>10.0} ops/s",
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("datacake-sqlite-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir.join("bench.db")).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let storage = SqliteStorage::open(path).await?;
    println!("database: {} ({DOC_BYTES}-byte documents)", path.display());

    let start = Instant::now();
    for id in 0..SINGLE_PUTS {
        storage.put("single", doc(id)).await?;
    }
    report("single puts, 1 caller", SINGLE_PUTS, start.elapsed());

    for (round, callers) in CONCURRENT_TASKS.into_iter().enumerate() {
        let keyspace = format!("concurrent-{round}");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..callers {
            let storage = storage.clone();
            let keyspace = keyspace.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..SINGLE_PUTS / callers {
                    storage.put(&keyspace, doc(task * SINGLE_PUTS + i)).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        report(
            &format!("single puts, {callers} concurrent callers"),
            SINGLE_PUTS / callers * callers,
            start.elapsed(),
        );
    }

    let start = Instant::now();
    for batch in 0..BULK_BATCHES {
        let docs = (batch * BULK_SIZE..(batch + 1) * BULK_SIZE)
            .map(doc)
            .collect();
        storage.multi_put("bulk", docs).await?;
    }
    let elapsed = start.elapsed();
    report(
        &format!("bulk puts of {BULK_SIZE} documents (batches)"),
        BULK_BATCHES,
        elapsed,
    );
    report(
        &format!("bulk puts of {BULK_SIZE} documents (documents)"),
        BULK_BATCHES * BULK_SIZE,
        elapsed,
    );

    let start = Instant::now();
    for id in 0..SINGLE_PUTS {
        anyhow::ensure!(storage.get("single", id).await?.is_some(), "missing {id}");
    }
    report("single gets, 1 caller", SINGLE_PUTS, start.elapsed());
    Ok(())
}
