//! What one durable log append costs on this machine's disk, by way of writing it: the Raft
//! log's SQLite transaction (WAL, one row per append) with and without its fsync, against the
//! two shapes a purpose-built segment log could take (appending to a growing file, or
//! overwriting a preallocated, zero-filled one, each followed by `fdatasync`).
//!
//! ```text
//! cargo run --release -p benchmarks --example log_write_probe [<bytes per append> [<appends>]]
//! ```
//!
//! Defaults: 1,500 bytes (about one Raft entry of 64 `(u64, u64)` commands, the `raft`
//! suite's 64-client rows) and 2,000 appends per case, spread over ten rounds in which the
//! cases take turns. The files go to the system's temporary directory: run it on the disk you
//! measure.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use test_helper::TempDir;

/// Space preallocated for the overwrite case: comfortably more than the appends write.
const PREALLOCATED: u64 = 256 << 20;

/// One way of appending: writes the next append and returns once it is durable (or, for
/// `synchronous = OFF`, handed to the OS).
type Append = Box<dyn FnMut(&[u8]) -> anyhow::Result<()>>;

/// Rounds each case's appends are spread over, the cases taking turns within a round (the
/// VM's speed drifts between phases for seconds at a time; measured one after the other, two
/// cases could land in different phases).
const ROUNDS: usize = 10;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bytes: usize = args.next().map_or(Ok(1_500), |a| a.parse())?;
    let appends: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    anyhow::ensure!(bytes > 0, "an append needs at least one byte");
    anyhow::ensure!(
        appends >= ROUNDS,
        "at least {ROUNDS} appends (one per round)"
    );
    anyhow::ensure!(
        bytes
            .checked_mul(appends)
            .is_some_and(|total| total as u64 <= PREALLOCATED),
        "at most {PREALLOCATED} bytes in all"
    );
    let dir = TempDir::new("log-write-probe");
    let payload: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mut cases: Vec<(&str, Append, Vec<f64>)> = vec![
        (
            "sqlite WAL, synchronous = OFF (no fsync)",
            sqlite(&dir.join("off.sqlite"), "OFF")?,
            Vec::new(),
        ),
        (
            "sqlite WAL, synchronous = FULL (the Raft log)",
            sqlite(&dir.join("full.sqlite"), "FULL")?,
            Vec::new(),
        ),
        (
            "append to a growing file + fdatasync",
            growing(&dir.join("growing.log"))?,
            Vec::new(),
        ),
        (
            "overwrite a preallocated file + fdatasync",
            preallocated(&dir.join("preallocated.log"))?,
            Vec::new(),
        ),
    ];
    println!(
        "{appends} appends of {bytes} bytes per case in {ROUNDS} interleaved rounds, in {}",
        dir.path().display()
    );
    for round in 0..ROUNDS {
        for turn in 0..cases.len() {
            let i = (round + turn) % cases.len();
            let (_, append, samples) = &mut cases[i];
            for _ in 0..appends / ROUNDS {
                let start = Instant::now();
                append(&payload)?;
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    println!(
        "{:<46} {:>8} {:>8} {:>8}",
        "case", "mean µs", "p50 µs", "p99 µs"
    );
    for (case, _, samples) in cases {
        report(case, samples);
    }
    Ok(())
}

/// One transaction per append, each inserting one row, as the Raft log's writer does.
fn sqlite(path: &Path, synchronous: &str) -> anyhow::Result<Append> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch("CREATE TABLE log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL)")?;
    let mut index = 0i64;
    Ok(Box::new(move |payload| {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO log (idx, entry) VALUES (?1, ?2)",
            (index, payload),
        )?;
        tx.commit()?;
        index += 1;
        Ok(())
    }))
}

/// Appends at the end of a file that grows with every write (its size changes, so each
/// `fdatasync` also writes the inode).
fn growing(path: &Path) -> anyhow::Result<Append> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(move |payload| {
        file.write_all(payload)?;
        file.sync_data()?;
        Ok(())
    }))
}

/// Overwrites a file whose blocks were all written (with zeros) and synced beforehand, one
/// append after the other: `fdatasync` then has no metadata to write.
fn preallocated(path: &Path) -> anyhow::Result<Append> {
    let mut file = File::create(path)?;
    let zeros = vec![0u8; 1 << 20];
    for _ in (0..PREALLOCATED).step_by(zeros.len()) {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    // Each append overwrites the next bytes of the zeros, in order.
    file.seek(SeekFrom::Start(0))?;
    Ok(Box::new(move |payload| {
        file.write_all(payload)?;
        file.sync_data()?;
        Ok(())
    }))
}

fn report(case: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!("{case:<46} {mean:>8.1} {p50:>8.1} {p99:>8.1}");
}
