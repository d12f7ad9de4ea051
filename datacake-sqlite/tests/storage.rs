//! `SqliteStorage` against the conformance suite, across restarts and a `SIGKILL`, on files
//! it must refuse, and with its database in use by another storage.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use datacake_crdt::{HLCTimestamp, MAX_MILLIS};
use datacake_eventual_consistency::test_suite::run_test_suite;
use datacake_eventual_consistency::{Document, Storage};
use test_helper::TempDir;

use datacake_sqlite::{
    SqliteStorage, SqliteStorageError, SqliteStorageOptions, Synchronous, SCHEMA_VERSION,
};

/// The database file of a test directory.
fn db(dir: &TempDir) -> PathBuf {
    dir.join("data.db")
}

#[tokio::test]
async fn in_memory_passes_the_conformance_suite() {
    run_test_suite(SqliteStorage::open_in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn on_disk_passes_the_conformance_suite() {
    let dir = TempDir::new("suite");
    run_test_suite(SqliteStorage::open(db(&dir)).await.unwrap()).await;
}

#[tokio::test]
async fn on_disk_with_synchronous_full_passes_the_conformance_suite() {
    let dir = TempDir::new("suite-full");
    let options = SqliteStorageOptions::new().with_synchronous(Synchronous::Full);
    run_test_suite(SqliteStorage::open_with(db(&dir), options).await.unwrap()).await;
}

#[tokio::test]
async fn documents_and_tombstones_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let docs: Vec<Document> = (0..100)
        .map(|i| Document::new(i, HLCTimestamp::new(1_000 + i, 3, 7), format!("doc-{i}")))
        .collect();
    {
        let storage = SqliteStorage::open(db(&dir)).await.unwrap();
        storage.multi_put("ks", docs.clone()).await.unwrap();
        storage
            .mark_as_tombstone("ks", 5, HLCTimestamp::new(5_000, 0, 2))
            .await
            .unwrap();
    }
    let storage = SqliteStorage::open(db(&dir)).await.unwrap();
    assert_eq!(storage.get_keyspace_list().await.unwrap(), vec!["ks"]);
    assert_eq!(storage.get("ks", 5).await.unwrap(), None);
    assert_eq!(storage.get("ks", 6).await.unwrap(), Some(docs[6].clone()));
    let metadata = storage.iter_metadata("ks").await.unwrap();
    assert_eq!(metadata.len(), 100);
    assert!(metadata.contains(&(5, HLCTimestamp::new(5_000, 0, 2), true)));
}

#[tokio::test]
async fn extreme_ids_and_timestamps_round_trip_losslessly() {
    let storage = SqliteStorage::open_in_memory().await.unwrap();
    let cases = [
        Document::new(
            u64::MAX,
            HLCTimestamp::new(MAX_MILLIS, u16::MAX, u32::MAX),
            "max",
        ),
        Document::new(0, HLCTimestamp::new(0, 0, 0), ""),
        Document::new(
            1 << 63,
            HLCTimestamp::new(1 << 47, 1 << 15, 1 << 31),
            "high bits",
        ),
    ];
    for doc in &cases {
        storage.put("edge", doc.clone()).await.unwrap();
        assert_eq!(
            storage.get("edge", doc.id).await.unwrap().as_ref(),
            Some(doc)
        );
    }
    let mut metadata = storage.iter_metadata("edge").await.unwrap();
    metadata.sort_unstable_by_key(|m| m.0);
    let mut expected: Vec<_> = cases
        .iter()
        .map(|d| (d.id, d.last_updated, false))
        .collect();
    expected.sort_unstable_by_key(|m| m.0);
    assert_eq!(metadata, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_all_acknowledged_and_stored() {
    let dir = TempDir::new("concurrent");
    let storage = SqliteStorage::open(db(&dir)).await.unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let storage = storage.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let id = task * 1_000 + i;
                    let doc = Document::new(id, HLCTimestamp::new(id, 0, 1), id.to_string());
                    storage.put("concurrent", doc).await.unwrap();
                    if i % 10 == 9 {
                        storage
                            .mark_as_tombstone("concurrent", id, HLCTimestamp::new(id + 1, 0, 1))
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let metadata = storage.iter_metadata("concurrent").await.unwrap();
    assert_eq!(metadata.len(), 64 * 50);
    assert_eq!(metadata.iter().filter(|m| m.2).count(), 64 * 5);
    assert_eq!(
        storage.get("concurrent", 63_048).await.unwrap(),
        Some(Document::new(
            63_048,
            HLCTimestamp::new(63_048, 0, 1),
            "63048"
        ))
    );
}

#[tokio::test]
async fn a_non_sqlite_file_is_refused_with_a_clear_error() {
    let dir = TempDir::new("garbage");
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(db(&dir), &garbage).unwrap();
    let error = SqliteStorage::open(db(&dir)).await.unwrap_err();
    assert!(
        matches!(error, SqliteStorageError::NotADatabase { ref path, .. } if path == &db(&dir)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a SQLite database"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(db(&dir)).unwrap(),
        garbage,
        "the file is left alone"
    );
}

#[tokio::test]
async fn a_damaged_sqlite_file_is_refused_with_a_clear_error() {
    let dir = TempDir::new("damaged");
    {
        let conn = rusqlite::Connection::open(db(&dir)).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(10000));
             CREATE TABLE u (y INTEGER); CREATE INDEX u_y ON u (y);",
        )
        .unwrap();
    }
    // Keep the 100-byte header (so it still looks like SQLite) but wreck the schema page.
    let mut bytes = std::fs::read(db(&dir)).unwrap();
    for b in &mut bytes[100..4096] {
        *b = 0xA5;
    }
    std::fs::write(db(&dir), &bytes).unwrap();
    let error = SqliteStorage::open(db(&dir)).await.unwrap_err();
    assert!(
        matches!(error, SqliteStorageError::NotADatabase { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_directory_at_the_path_is_an_open_error() {
    let dir = TempDir::new("dir");
    let path = dir.join("a-directory");
    std::fs::create_dir(&path).unwrap();
    let error = SqliteStorage::open(&path).await.unwrap_err();
    assert!(
        matches!(
            error,
            SqliteStorageError::Open { .. } | SqliteStorageError::NotADatabase { .. }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_schema_version_is_recorded_and_a_newer_one_is_refused() {
    let dir = TempDir::new("schema");
    {
        let storage = SqliteStorage::open(db(&dir)).await.unwrap();
        storage
            .put("ks", Document::new(1, HLCTimestamp::new(1, 0, 1), "a"))
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let version: i64 = conn
        .query_row("SELECT version FROM datacake_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);

    // The same version reopens fine.
    SqliteStorage::open(db(&dir)).await.unwrap();

    conn.execute(
        "UPDATE datacake_schema SET version = ?1",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    let error = SqliteStorage::open(db(&dir)).await.unwrap_err();
    assert!(
        matches!(
            error,
            SqliteStorageError::UnsupportedSchemaVersion { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
        ),
        "{error:?}"
    );
    let version: i64 = conn
        .query_row("SELECT version FROM datacake_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        SCHEMA_VERSION + 1,
        "a newer database is not modified"
    );
}

/// Options that give up at once on a database in use.
fn no_lock_wait() -> SqliteStorageOptions {
    SqliteStorageOptions::new().with_lock_wait(Duration::ZERO)
}

#[tokio::test]
async fn a_database_in_use_is_refused_until_its_storage_is_dropped() {
    let dir = TempDir::new("in-use");
    let first = SqliteStorage::open(db(&dir)).await.unwrap();
    let clone = first.clone();
    let doc = Document::new(1, HLCTimestamp::new(1_000, 0, 1), "first");
    first.put("ks", doc.clone()).await.unwrap();
    match SqliteStorage::open_with(db(&dir), no_lock_wait()).await {
        Err(error @ SqliteStorageError::InUse { .. }) => {
            assert!(error.to_string().contains("in use"), "{error}");
            assert!(matches!(error, SqliteStorageError::InUse { path } if path == db(&dir)));
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    // A clone keeps it open.
    drop(first);
    assert!(SqliteStorage::open_with(db(&dir), no_lock_wait())
        .await
        .is_err());
    // Once the last clone is gone, a waiting open gets it and reads what it wrote.
    let reopening = tokio::spawn(SqliteStorage::open(db(&dir)));
    drop(clone);
    let second = reopening.await.unwrap().unwrap();
    assert_eq!(second.get("ks", 1).await.unwrap(), Some(doc));
}

/// Set for the child process of [`acknowledged_writes_survive_sigkill`]: the database path.
const CHILD_DB: &str = "DATACAKE_SQLITE_DURABILITY_CHILD_DB";
const BULK: u64 = 1_000;
const BULK_KEYSPACE: &str = "bulk";
const SINGLE_KEYSPACE: &str = "single";

fn single_doc(i: u64) -> Document {
    Document::new(
        i,
        HLCTimestamp::new(1_000 + i, (i % 7) as u16, 3),
        format!("single-{i}"),
    )
}

fn bulk_docs(batch: u64) -> Vec<Document> {
    (batch * BULK..(batch + 1) * BULK)
        .map(|i| Document::new(i, HLCTimestamp::new(2_000 + i, 1, 4), format!("bulk-{i}")))
        .collect()
}

/// The child side: writes forever, printing `acked single N` / `acked bulk B` after each
/// write returned `Ok`. Does nothing unless started by the parent test.
#[tokio::test]
async fn durability_child() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let storage = SqliteStorage::open(&path).await.unwrap();
    let mut out = std::io::stdout();
    for i in 0.. {
        storage.put(SINGLE_KEYSPACE, single_doc(i)).await.unwrap();
        writeln!(out, "acked single {i}").unwrap();
        if i % 20 == 0 {
            let batch = i / 20;
            storage
                .multi_put(BULK_KEYSPACE, bulk_docs(batch))
                .await
                .unwrap();
            writeln!(out, "acked bulk {batch}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("sigkill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db(&dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut single = None;
    let mut bulk = None;
    let mut record = |line: &str| {
        if let Some(n) = line.strip_prefix("acked single ") {
            single = Some(n.parse::<u64>().unwrap());
        } else if let Some(n) = line.strip_prefix("acked bulk ") {
            bulk = Some(n.parse::<u64>().unwrap());
        }
    };
    // Kill it mid-stream, once it has acknowledged a fair number of writes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line == "acked single 300";
                record(&line);
                if done {
                    break;
                }
            }
            Err(error) => {
                let _ = child.kill();
                panic!("child did not acknowledge 300 writes in time: {error}");
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // While the child writes, this process cannot open its database.
    let refused = runtime.block_on(SqliteStorage::open_with(db(&dir), no_lock_wait()));
    assert!(
        matches!(refused, Err(SqliteStorageError::InUse { ref path }) if *path == db(&dir)),
        "{refused:?}"
    );
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    // Everything it printed before dying was acknowledged too.
    reader.join().unwrap();
    for line in lines.try_iter() {
        record(&line);
    }
    let single = single.expect("acked singles");
    let bulk = bulk.expect("acked bulks");
    eprintln!(
        "child acknowledged {} single puts and {} bulk batches before SIGKILL",
        single + 1,
        bulk + 1
    );

    runtime.block_on(async {
        // The kill released the lock: no wait.
        let storage = SqliteStorage::open_with(db(&dir), no_lock_wait())
            .await
            .unwrap();
        let ids: Vec<u64> = (0..=single).collect();
        let mut found = storage.multi_get(SINGLE_KEYSPACE, ids).await.unwrap();
        found.sort_unstable_by_key(|d| d.id);
        let expected: Vec<_> = (0..=single).map(single_doc).collect();
        assert_eq!(found.len(), expected.len(), "acknowledged single puts lost");
        assert_eq!(found, expected);

        let ids: Vec<u64> = (0..(bulk + 1) * BULK).collect();
        let mut found = storage.multi_get(BULK_KEYSPACE, ids).await.unwrap();
        found.sort_unstable_by_key(|d| d.id);
        let expected: Vec<_> = (0..=bulk).flat_map(bulk_docs).collect();
        assert_eq!(found.len(), expected.len(), "acknowledged bulk puts lost");
        assert_eq!(found, expected);
    });
}
