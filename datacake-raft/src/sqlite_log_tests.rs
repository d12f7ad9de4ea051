//! Tests of the durable log's group commit: reads before the flush, the order of queued ops,
//! the tail that spills to SQLite, and a real `SIGKILL` in the middle of a stream of appends.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};
use rusqlite::Connection;

use crate::machine_store::SnapshotOnDisk;
use crate::sqlite_log::SqliteLogStore;
use crate::types::{Entry, LogId, Vote};
use test_helper::TempDir;

/// How long any test waits for something it expects.
const DEADLINE: Duration = Duration::from_secs(30);

/// The log's file in a test's directory.
pub(crate) fn db(dir: &TempDir) -> PathBuf {
    dir.join("log.sqlite")
}

pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub(crate) fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

/// Holds SQLite's write lock on `path` from another connection, so the store's writer
/// cannot commit (it waits for the lock) until the guard is dropped.
struct WriteLock(Connection);

impl WriteLock {
    fn take(path: &Path) -> Self {
        let conn = Connection::open(path).expect("second connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        Self(conn)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// Receives `n` values from `rx`, failing after [`DEADLINE`].
pub(crate) fn recv_n<T>(rx: &mpsc::Receiver<T>, n: usize) -> Vec<T> {
    let until = Instant::now() + DEADLINE;
    (0..n)
        .map(|i| {
            let left = until.saturating_duration_since(Instant::now());
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("only {i} of {n} values before the deadline"))
        })
        .collect()
}

async fn indexes(store: &mut SqliteLogStore, range: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    store
        .try_get_log_entries(range)
        .await
        .expect("read")
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

/// The indexes of the rows on disk (read through a connection of its own).
pub(crate) fn rows_on_disk(path: &Path) -> Vec<u64> {
    let conn = Connection::open(path).expect("second connection");
    let mut stmt = conn
        .prepare("SELECT idx FROM raft_log ORDER BY idx")
        .expect("query");
    stmt.query_map([], |row| row.get::<_, i64>(0))
        .expect("rows")
        .map(|idx| idx.expect("idx") as u64)
        .collect()
}

/// Appends `indexes` and waits until they are durable.
pub(crate) fn append_flushed(store: &SqliteLogStore, indexes: std::ops::RangeInclusive<u64>) {
    let (flushed, flushes) = mpsc::channel();
    let n = indexes.clone().count();
    for index in indexes {
        let flushed = flushed.clone();
        store
            .append_with([entry(1, index)], move |outcome| {
                let _ = flushed.send(outcome.is_ok());
            })
            .expect("append");
    }
    assert!(recv_n(&flushes, n).into_iter().all(|ok| ok), "flushed");
}

/// openraft purges a follower's log as soon as it hands a received snapshot to the state
/// machine, before the snapshot file is written. The rows must stay on disk until the file
/// covers them: a crash in between would otherwise leave a log that starts past the
/// snapshot on disk.
#[tokio::test]
async fn purged_rows_stay_on_disk_until_the_snapshot_file_covers_them() {
    let dir = TempDir::new("purge-bound");
    let snapshot = SnapshotOnDisk::default();
    let mut store = SqliteLogStore::open_bounded(&db(&dir), snapshot.clone()).expect("open");
    append_flushed(&store, 1..=10);
    store.purge(log_id(1, 6)).await.expect("purge");
    // Purged for openraft at once...
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 6)));
    assert_eq!(indexes(&mut store, 7..11).await.len(), 4);
    // ...but no snapshot is on disk yet: every row stays (an append after it is durable,
    // so anything queued before it is too).
    append_flushed(&store, 11..=11);
    assert_eq!(rows_on_disk(&db(&dir)), (1..=11).collect::<Vec<_>>());

    // The file covers up to 4: rows up to 4 go with the next append.
    snapshot.set(Some(log_id(1, 4)));
    append_flushed(&store, 12..=12);
    assert_eq!(rows_on_disk(&db(&dir)), (5..=12).collect::<Vec<_>>());
    // It covers the purge: the rest goes.
    snapshot.set(Some(log_id(1, 8)));
    append_flushed(&store, 13..=13);
    assert_eq!(rows_on_disk(&db(&dir)), (7..=13).collect::<Vec<_>>());
    drop(store);

    // A reopened log starts after the purge that reached the disk.
    let mut reopened = SqliteLogStore::open(&db(&dir)).expect("reopen");
    let state = reopened.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 6)));
    assert_eq!(state.last_log_id, Some(log_id(1, 13)));
}

/// Appends queued while the writer cannot commit are readable at once, share one commit
/// once it can, and are reported flushed in order.
#[tokio::test]
async fn appends_are_readable_before_the_flush_and_share_one_commit() {
    let dir = TempDir::new("group");
    let mut store = SqliteLogStore::open(&db(&dir)).expect("open");
    let lock = WriteLock::take(&db(&dir));
    let (flushed, flushes) = mpsc::channel();
    for index in 1..=100 {
        let flushed = flushed.clone();
        store
            .append_with([entry(1, index)], move |outcome| {
                let _ = flushed.send((index, outcome.is_ok()));
            })
            .expect("append");
    }
    // Nothing can be durable yet (the writer waits for the lock), yet all is readable.
    assert!(
        flushes.try_recv().is_err(),
        "flushed while the database was locked"
    );
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(log_id(1, 100)));
    let read = indexes(&mut store, 1..101).await;
    assert_eq!(read, (1..=100).map(|i| (1, i)).collect::<Vec<_>>());

    drop(lock);
    let reported = recv_n(&flushes, 100);
    assert_eq!(reported, (1..=100).map(|i| (i, true)).collect::<Vec<_>>());
    let (commits, appends, entries) = store.commits();
    assert_eq!((appends, entries), (100, 100));
    assert!(
        commits <= 2,
        "100 appends queued behind a lock took {commits} commits"
    );
}

/// A committed id costs no commit of its own when an append follows it: they share one.
#[tokio::test]
async fn a_committed_id_shares_the_next_appends_commit() {
    let dir = TempDir::new("deferred");
    // A deferral far longer than the test, so the two ops always meet.
    let mut store = SqliteLogStore::open_deferring(&db(&dir), DEADLINE).expect("open");
    store
        .save_committed(Some(log_id(1, 1)))
        .await
        .expect("committed");
    let (flushed, flushes) = mpsc::channel();
    store
        .append_with([entry(1, 2)], move |outcome| {
            let _ = flushed.send(outcome.is_ok());
        })
        .expect("append");
    assert_eq!(recv_n(&flushes, 1), vec![true]);
    assert_eq!(store.commits(), (1, 1, 1), "(commits, appends, entries)");
    drop(store);
    let mut reopened = SqliteLogStore::open(&db(&dir)).expect("reopen");
    assert_eq!(
        reopened.read_committed().await.expect("committed"),
        Some(log_id(1, 1))
    );
}

/// A committed id with nothing after it is still written, once the deferral is over.
#[tokio::test]
async fn a_lone_committed_id_is_written_after_the_deferral() {
    let dir = TempDir::new("lone");
    let mut store =
        SqliteLogStore::open_deferring(&db(&dir), Duration::from_millis(10)).expect("open");
    store
        .save_committed(Some(log_id(3, 7)))
        .await
        .expect("committed");
    let until = Instant::now() + DEADLINE;
    while store.commits().0 == 0 {
        assert!(Instant::now() < until, "the committed id was never written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reader = Connection::open(db(&dir)).expect("second connection");
    let rows: i64 = reader
        .query_row(
            "SELECT COUNT(*) FROM raft_meta WHERE key = 'committed'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(rows, 1);
}

/// Truncate, purge, committed and vote queued behind appends apply in queue order, both to
/// what readers see before the flush and to what a reopened store finds.
#[tokio::test]
async fn queued_ops_keep_their_order() {
    let dir = TempDir::new("order");
    let mut store = SqliteLogStore::open(&db(&dir)).expect("open");
    let lock = WriteLock::take(&db(&dir));
    let (flushed, flushes) = mpsc::channel();
    let done = move |_| {
        let _ = flushed.send(());
    };
    store
        .append_with((1..=5).map(|i| entry(1, i)), done.clone())
        .expect("append");
    store.truncate(log_id(1, 4)).await.expect("truncate");
    store
        .append_with([entry(2, 4), entry(2, 5)], done)
        .expect("append");
    store
        .save_committed(Some(log_id(2, 4)))
        .await
        .expect("committed");
    store.purge(log_id(1, 1)).await.expect("purge");
    let mut voter = store.clone();
    let vote = tokio::spawn(async move { voter.save_vote(&Vote::new(2, 1)).await });

    let expected = vec![(1, 2), (1, 3), (2, 4), (2, 5)];
    let check = |mut store: SqliteLogStore| {
        let expected = expected.clone();
        async move {
            assert_eq!(indexes(&mut store, 0..100).await, expected);
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
            assert_eq!(state.last_log_id, Some(log_id(2, 5)));
            assert_eq!(
                store.read_committed().await.expect("committed"),
                Some(log_id(2, 4))
            );
        }
    };
    check(store.clone()).await;
    assert!(
        flushes.try_recv().is_err(),
        "flushed while the database was locked"
    );
    assert!(
        !vote.is_finished(),
        "the vote returned before it was durable"
    );

    drop(lock);
    tokio::time::timeout(DEADLINE, vote)
        .await
        .expect("vote saved in time")
        .expect("vote task")
        .expect("vote saved");
    recv_n(&flushes, 2);
    drop(store);
    let mut reopened = SqliteLogStore::open(&db(&dir)).expect("reopen");
    check(reopened.clone()).await;
    assert_eq!(
        reopened.read_vote().await.expect("vote"),
        Some(Vote::new(2, 1))
    );
}

/// More entries than the in-memory tail keeps: the older ones come from SQLite, and a read
/// across the boundary is whole.
#[tokio::test]
async fn entries_beyond_the_tail_are_read_from_sqlite() {
    let dir = TempDir::new("tail");
    let mut store = SqliteLogStore::open(&db(&dir)).expect("open");
    let (flushed, flushes) = mpsc::channel();
    let total = 10_000u64;
    for start in (1..=total).step_by(500) {
        let flushed = flushed.clone();
        store
            .append_with((start..start + 500).map(|i| entry(1, i)), move |_| {
                let _ = flushed.send(());
            })
            .expect("append");
    }
    recv_n(&flushes, (total / 500) as usize);
    // One more append, so the writer has settled every group before we read.
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    assert_eq!(
        indexes(&mut store, 1..total + 1).await,
        (1..=total).map(|i| (1, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        indexes(&mut store, 3..7).await,
        vec![(1, 3), (1, 4), (1, 5), (1, 6)]
    );
}

/// Marks the child process of [`durable_log_survives_sigkill`]; its value is the database.
const CHILD_ENV: &str = "DATACAKE_RAFT_LOG_CRASH_CHILD";
/// The child saves a vote of term `index / VOTE_EVERY` after every `VOTE_EVERY` appends.
const VOTE_EVERY: u64 = 50;
/// The child stops after this many entries, if it is not killed first.
const CHILD_ENTRIES: u64 = 1_000_000;

fn term_of(index: u64) -> u64 {
    1 + index / 1000
}

/// The child: appends entries 1, 2, ... (up to 256 unflushed at a time), printing
/// `flushed <index>` from each callback and `vote <term>` after each `save_vote` returned.
async fn crash_child(db: &Path) {
    let store = SqliteLogStore::open(db).expect("child opens");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut voter = store.clone();
    for index in 1..=CHILD_ENTRIES {
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        store
            .append_with([entry(term_of(index), index)], move |outcome| {
                if outcome.is_ok() {
                    println!("flushed {index}");
                }
                drop(permit);
            })
            .expect("child appends");
        if index % VOTE_EVERY == 0 {
            let term = index / VOTE_EVERY;
            voter
                .save_vote(&Vote::new(term, 1))
                .await
                .expect("child votes");
            println!("vote {term}");
        }
    }
}

/// What the child printed.
#[derive(Default)]
struct Reported {
    flushed: Vec<u64>,
    votes: Vec<u64>,
}

impl Reported {
    fn record(&mut self, line: &str) {
        // The test harness may print on the same line before the child's first output.
        if let Some((_, index)) = line.split_once("flushed ") {
            self.flushed.push(index.parse().expect("index"));
        } else if let Some((_, term)) = line.split_once("vote ") {
            self.votes.push(term.parse().expect("term"));
        }
    }
}

/// A real process appends and votes while the parent kills it with `SIGKILL`; the reopened
/// log must hold every entry reported flushed, be a whole prefix (no hole, no torn entry),
/// and hold the last vote reported saved (or the one being saved when it died).
#[test]
fn durable_log_survives_sigkill() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(crash_child(Path::new(&db)));
        return;
    }
    let dir = TempDir::new("sigkill");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sqlite_log_tests::durable_log_survives_sigkill",
            "--nocapture",
            "--quiet",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, db(&dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines: the kill may cut the last one short.
        while matches!(stdout.read_line(&mut line), Ok(n) if n > 0) && line.ends_with('\n') {
            if lines_tx.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });

    let mut seen = Reported::default();
    // Kill it mid-stream: once it has reported a good number of flushes and votes.
    let until = Instant::now() + DEADLINE;
    while seen.flushed.len() < 3_000 || seen.votes.len() < 10 {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.record(&line),
            Err(_) => panic!(
                "the child reported {} flushes and {} votes before the deadline",
                seen.flushed.len(),
                seen.votes.len()
            ),
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("child reaped");
    assert!(!status.success(), "the child finished before it was killed");
    // What it printed before it died still counts.
    reader.join().expect("reader");
    while let Ok(line) = lines.try_recv() {
        seen.record(&line);
    }
    let Reported { flushed, votes } = seen;
    let expected: Vec<u64> = (1..=flushed.len() as u64).collect();
    let first_wrong = flushed.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        first_wrong.is_none(),
        "flush callbacks ran out of order: {:?}",
        first_wrong.map(|i| &flushed[i.saturating_sub(3)..(i + 3).min(flushed.len())])
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut store = SqliteLogStore::open(&db(&dir)).expect("reopen after SIGKILL");
        let state = store.get_log_state().await.expect("state");
        let last = state.last_log_id.expect("a log").index;
        let reported = *flushed.last().expect("flushes");
        assert!(
            last >= reported,
            "entry {reported} was reported flushed, the log ends at {last}"
        );
        assert!(last < CHILD_ENTRIES, "the child was not killed mid-stream");
        assert_eq!(
            indexes(&mut store, 0..last + 1).await,
            (1..=last).map(|i| (term_of(i), i)).collect::<Vec<_>>(),
            "the log is not the whole prefix 1..={last}"
        );
        let vote = store.read_vote().await.expect("vote").expect("a vote");
        let acked = *votes.last().expect("votes");
        assert!(
            vote == Vote::new(acked, 1) || vote == Vote::new(acked + 1, 1),
            "vote {acked} was acknowledged last, the store holds {vote:?}"
        );
    });
}
