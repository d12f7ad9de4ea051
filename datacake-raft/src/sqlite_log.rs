//! The durable Raft log and vote store: SQLite (WAL, `synchronous = FULL`), written by one
//! thread with group commit ([`log_writer`](crate::log_writer)).
//!
//! **What is durable when.**
//! - `append` returns as soon as the entries are queued for the writer and visible to
//!   readers; its `LogFlushed` callback runs once the transaction holding them has committed
//!   (the WAL fsynced). Appends queued while a commit runs share the next one.
//! - `save_vote` returns only once the vote is durable (openraft requires it), and with it
//!   everything queued before it.
//! - `truncate`, `purge` and `save_committed` return once queued: they go through the same
//!   queue, so they become durable in order with the appends around them, at the latest with
//!   the next append or vote. (Losing one in a crash is harmless: the appends queued after it
//!   were not acknowledged either, and openraft treats the committed id as a hint.)
//!
//! **Reads see what was queued, not only what is durable.** openraft reads entries it has
//! appended before they are flushed (a leader's replication streams read the entries it is
//! still fsyncing), so the store keeps the *logical* state in memory: the vote, the committed
//! and purged ids, the last log id, and a tail of the log that holds every entry from
//! `floor` on. Entries below `floor` are read from SQLite with a second connection; the tail
//! only gives up entries (raising `floor`) when nothing is queued, i.e. when SQLite holds
//! exactly the logical log, so those rows are right and stay right until an op below `floor`
//! (a truncate, which lowers `floor` first) is queued. Reads never wait for an fsync.
//!
//! After a failed commit the store refuses every further call: openraft has seen entries that
//! are not on disk, so writing anything after them could leave a hole.

// openraft's own error types (`StorageError`, `ConfigError`) are large; they are what its
// traits return, so helpers return them unboxed too (as openraft itself does).
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::dir_lock::DirLock;
use crate::early::{EarlyCopies, EarlyCopy};
use crate::log_writer::{Done, Group, Op, Writer, DEFER};
use crate::machine_store::SnapshotOnDisk;
use crate::types::{Entry, LogId, StorageError, StorageResult, TypeConfig, Vote};

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "purged";

/// Durable entries the in-memory tail keeps for readers (replication, apply) once nothing is
/// queued; older ones are read from SQLite.
const TAIL_KEEP: usize = 4096;

/// The most entries taken early ([`SqliteLogStore::write_early`]) and not yet appended: a
/// leader has one or two entries in flight; a follower whose Raft stalled takes no more.
const MAX_EARLY_ENTRIES: usize = 64;

/// The tracing target of the per-commit `trace` event (`appends`, `entries` and `ops` fields),
/// which the benchmark counts to report entries per fsync.
const COMMIT_TARGET: &str = "datacake_raft::log";

/// Encodes a log entry, vote or log id for a row. With [`decode`], the only (de)serialization
/// of this store.
fn encode<T: Serialize + ?Sized>(value: &T) -> StorageResult<Vec<u8>> {
    codec::encode(value).map_err(io_err)
}

/// Decodes what [`encode`] wrote.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    codec::decode(bytes).map_err(read_err)
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::write(AnyError::new(&e)))
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::read(AnyError::new(&e)))
}

/// The error every call returns once a commit has failed.
fn failed_err(e: &rusqlite::Error) -> StorageError {
    StorageError::from(StorageIOError::write(AnyError::new(e)))
}

fn stopped_err() -> StorageError {
    io_err(std::io::Error::other("the raft log writer has stopped"))
}

/// `idx` as SQLite's signed integer (log indexes stay far below `i64::MAX`).
fn sql_index(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// The logical state: everything queued, whether or not it is durable yet.
#[derive(Debug, Default)]
struct Logical {
    /// Every entry of the log from `floor` on.
    tail: BTreeMap<u64, Entry>,
    /// Entries below it are read from SQLite (and are durable).
    floor: u64,
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    /// The purge queued for the disk so far; below `last_purged` while the snapshot that
    /// covers the rest is not on disk yet (see [`SqliteLogStore::queue_purge`]).
    durable_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Ops handed to the writer so far.
    queued: u64,
    /// Ops the writer has settled (committed or failed).
    settled: u64,
    /// Why the writer failed, once it has.
    failed: Option<Arc<rusqlite::Error>>,
    /// Entries the leader sent ahead of its append message and that are queued for the disk
    /// but not yet part of the log (see [`SqliteLogStore::write_early`]): they continue the
    /// log from `last_log_id`, in order.
    early: BTreeMap<u64, Entry>,
}

impl Logical {
    fn check(&self) -> StorageResult<()> {
        match &self.failed {
            Some(error) => Err(failed_err(error)),
            None => Ok(()),
        }
    }
}

/// How much the writer has written: group commits (one fsync each), and the appends and
/// entries they held.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    appends: AtomicU64,
    entries: AtomicU64,
}

struct Shared {
    state: Arc<Mutex<Logical>>,
    writer: Writer,
    /// The snapshot on disk beside this log: rows are deleted only up to what it covers.
    /// (`None`: no such bound, for tests of the log alone.)
    snapshot: Option<SnapshotOnDisk>,
    /// Reads the rows below the tail's floor.
    reader: Mutex<Connection>,
    /// Where this node, as leader, sends copies of its entries ahead of its own flush (set
    /// once the node's Raft runs; see [`early`](crate::early)).
    early_copies: OnceLock<EarlyCopies>,
    #[cfg(test)]
    counters: Arc<Counters>,
}

/// The log and the vote in one SQLite database. Clones share the store.
#[derive(Clone)]
pub(crate) struct SqliteLogStore {
    shared: Arc<Shared>,
}

/// A reference to a [`SqliteLogStore`] that does not keep it open: the store's writer thread,
/// and with it the directory's lock, end with openraft's last reference.
#[derive(Clone)]
pub(crate) struct WeakLogStore(Weak<Shared>);

impl WeakLogStore {
    /// The store, while openraft still has it.
    pub(crate) fn upgrade(&self) -> Option<SqliteLogStore> {
        self.0.upgrade().map(|shared| SqliteLogStore { shared })
    }
}

impl Debug for SqliteLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLogStore").finish_non_exhaustive()
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    )?;
    Ok(conn)
}

fn read_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> StorageResult<Option<T>> {
    let value: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM raft_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()
        .map_err(read_err)?;
    value.map(|v| decode(&v)).transpose()
}

/// The durable entries with `start <= index < end`.
fn read_rows(conn: &Connection, start: u64, end: u64) -> StorageResult<Vec<Entry>> {
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
        .map_err(read_err)?;
    let rows = stmt
        .query_map(params![sql_index(start), sql_index(end)], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .map_err(read_err)?;
    rows.map(|row| decode(&row.map_err(read_err)?)).collect()
}

/// The durable entry with the highest index below `end`.
fn read_last_below(conn: &Connection, end: u64) -> StorageResult<Option<Entry>> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT entry FROM raft_log WHERE idx < ?1 ORDER BY idx DESC LIMIT 1",
            [sql_index(end)],
            |r| r.get(0),
        )
        .optional()
        .map_err(read_err)?;
    bytes.map(|b| decode(&b)).transpose()
}

impl SqliteLogStore {
    /// Opens (or creates) the database at `path` and starts its writer thread (for tests:
    /// nodes open theirs with [`open_locked`](Self::open_locked)).
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> StorageResult<Self> {
        Self::open_deferring(path, DEFER)
    }

    /// `open` (a test helper) for a node: the writer thread keeps the durable directory's
    /// `lock` until it has committed its last group (see [`DirLock`]).
    /// Rows are deleted by a purge only once `snapshot` (the state machine's file) covers
    /// them.
    pub(crate) fn open_locked(
        path: &Path,
        lock: DirLock,
        snapshot: SnapshotOnDisk,
    ) -> StorageResult<Self> {
        Self::open_with(path, DEFER, Some(lock), Some(snapshot))
    }

    /// [`open`](Self::open), deleting purged rows only once `snapshot` covers them.
    #[cfg(test)]
    pub(crate) fn open_bounded(path: &Path, snapshot: SnapshotOnDisk) -> StorageResult<Self> {
        Self::open_with(path, DEFER, None, Some(snapshot))
    }

    /// [`open`](Self::open), with a committed id waiting up to `defer` for company (see
    /// [`Op::Deferred`]).
    #[cfg(test)]
    pub(crate) fn open_deferring(path: &Path, defer: Duration) -> StorageResult<Self> {
        Self::open_with(path, defer, None, None)
    }

    fn open_with(
        path: &Path,
        defer: Duration,
        lock: Option<DirLock>,
        snapshot: Option<SnapshotOnDisk>,
    ) -> StorageResult<Self> {
        let conn = open_connection(path).map_err(read_err)?;
        let reader = open_connection(path).map_err(read_err)?;
        let last_purged: Option<LogId> = read_meta(&reader, KEY_PURGED)?;
        let last_entry = read_last_below(&reader, u64::MAX)?;
        let last_log_id = last_entry.map(|e| e.log_id).or(last_purged);
        let state = Arc::new(Mutex::new(Logical {
            floor: last_log_id.map_or(0, |id| id.index + 1),
            last_log_id,
            last_purged,
            durable_purged: last_purged,
            vote: read_meta(&reader, KEY_VOTE)?,
            committed: read_meta::<Option<LogId>>(&reader, KEY_COMMITTED)?.flatten(),
            ..Logical::default()
        }));
        let counters = Arc::new(Counters::default());
        let writer = {
            let state = state.clone();
            #[cfg(test)]
            let counters = counters.clone();
            Writer::spawn(conn, defer, move |group, outcome| {
                // Moved into the writer thread, which drops it as it ends.
                let _held = &lock;
                settle(&state, &counters, group, outcome)
            })
            .map_err(io_err)?
        };
        Ok(Self {
            shared: Arc::new(Shared {
                state,
                writer,
                snapshot,
                reader: Mutex::new(reader),
                early_copies: OnceLock::new(),
                #[cfg(test)]
                counters,
            }),
        })
    }

    /// Group commits so far, and the appends and entries they held.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> (u64, u64, u64) {
        let c = &self.shared.counters;
        (
            c.commits.load(Ordering::Relaxed),
            c.appends.load(Ordering::Relaxed),
            c.entries.load(Ordering::Relaxed),
        )
    }

    /// Queues `op` and records it, with the logical state locked (so the queue's order is the
    /// order of the state's changes).
    fn queue(&self, state: &mut Logical, op: Op, done: Done) -> StorageResult<()> {
        self.shared
            .writer
            .send(op, done)
            .map_err(|()| stopped_err())?;
        state.queued += 1;
        Ok(())
    }

    /// Appends `entries` like [`RaftLogStorage::append`]; `flushed` runs on the writer thread
    /// once they are durable, after the callbacks of everything queued before.
    pub(crate) fn append_with<I, F>(&self, entries: I, flushed: F) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry>,
        F: FnOnce(Result<(), Arc<rusqlite::Error>>) + Send + 'static,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut rows = entries
            .iter()
            .map(|e| Ok((sql_index(e.log_id.index), encode(e)?)))
            .collect::<StorageResult<Vec<_>>>()?;
        let mut state = self.shared.state.lock();
        state.check()?;
        self.queue_purge(&mut state)?;
        if !state.early.is_empty() {
            // How many of the entries, from the first, were taken early as they are.
            let first = state.early.keys().next().copied();
            let copied = if entries.first().map(|e| e.log_id.index) == first {
                entries
                    .iter()
                    .take_while(|e| state.early.get(&e.log_id.index) == Some(*e))
                    .count()
            } else {
                0
            };
            if copied == entries.len() {
                return self.append_written_early(state, entries, flushed);
            }
            // Those rows stay (written, in queue order, before this append's); the other
            // copies are not what the log holds next.
            for entry in &entries[..copied] {
                state.early.remove(&entry.log_id.index);
            }
            self.abandon_early(&mut state)?;
            rows.drain(..copied);
        }
        if let Some(copies) = self.shared.early_copies.get() {
            if let Some(copy) = EarlyCopy::of(copies.me(), state.vote, state.last_log_id, &entries)
            {
                copies.send(copy);
            }
        }
        if let Some(first) = entries.first().map(|e| e.log_id.index) {
            if first < state.floor {
                // Never done by openraft (it appends after its last entry, truncating
                // first): bring the durable rows from `first` on into the tail, so it again
                // holds everything from its floor on. Rows below the floor are stable.
                let below = read_rows(&self.shared.reader.lock(), first, state.floor)?;
                for entry in below {
                    state.tail.insert(entry.log_id.index, entry);
                }
                state.floor = first;
            }
        }
        for entry in entries {
            state.tail.insert(entry.log_id.index, entry);
        }
        if let Some((_, last)) = state.tail.last_key_value() {
            state.last_log_id = Some(last.log_id);
        }
        self.queue(&mut state, Op::Append { rows }, Box::new(flushed))
    }

    /// Queues the deletion of the purged rows, as far as the snapshot on disk covers them.
    ///
    /// openraft purges a follower's log right after it hands a received snapshot to the
    /// state machine, without waiting for the snapshot file to be written: a purge that
    /// reached the disk first would leave, after a crash, a log starting past an older
    /// snapshot (a hole no restart can fill). So the rows stay until the file covers them;
    /// the rest of the purge is queued by a later call (every append tries), and a restart
    /// finding the snapshot ahead of the log has openraft purge up to it.
    fn queue_purge(&self, state: &mut Logical) -> StorageResult<()> {
        let Some(wanted) = state.last_purged else {
            return Ok(());
        };
        if state.durable_purged >= Some(wanted) {
            return Ok(());
        }
        let upto = match self.shared.snapshot.as_ref().map(SnapshotOnDisk::covered) {
            None => wanted,
            Some(Some(covered)) if covered.index >= wanted.index => wanted,
            Some(Some(covered)) if Some(covered) > state.durable_purged => covered,
            Some(_) => return Ok(()),
        };
        let value = encode(&upto)?;
        self.queue(
            state,
            Op::Purge {
                upto: sql_index(upto.index),
                key: KEY_PURGED,
                value,
            },
            nothing(),
        )?;
        state.durable_purged = Some(upto);
        Ok(())
    }

    /// Queues a metadata write; `done` runs once it is durable.
    fn put_meta(
        &self,
        state: &mut Logical,
        key: &'static str,
        value: Vec<u8>,
        done: Done,
    ) -> StorageResult<()> {
        self.queue(state, Op::Meta { key, value }, done)
    }

    /// A reference that does not keep the store open.
    pub(crate) fn downgrade(&self) -> WeakLogStore {
        WeakLogStore(Arc::downgrade(&self.shared))
    }

    /// Has this node, as leader, hand `copies` each batch of entries it appends, to send to
    /// its followers before its own flush (see [`early`](crate::early)).
    pub(crate) fn send_early_copies(&self, copies: EarlyCopies) {
        let _ = self.shared.early_copies.set(copies);
    }

    /// Queues `entries`, which the leader of `vote` sent ahead of its append message, for
    /// the disk, so that the append, when it comes, finds them durable already and is
    /// reported flushed without a commit of its own (the follower's fsync then overlaps the
    /// leader's instead of following it).
    ///
    /// Taken only if they are exactly what the append can bring: the vote is this node's
    /// committed vote (so its leader sent them, and the vote is on disk before them), they
    /// are that leader's entries, and they continue the log (or the entries taken early
    /// before them) without a gap. They stay out of the log openraft sees until its append
    /// brings them. Should this node crash first, they are in the log it restarts with,
    /// like entries an append wrote before the crash kept the follower from answering.
    /// Returns whether they were taken; anything else is ignored (the append brings them
    /// as always).
    pub(crate) fn write_early(
        &self,
        vote: &Vote,
        prev: Option<LogId>,
        entries: Vec<Entry>,
    ) -> StorageResult<bool> {
        let mut state = self.shared.state.lock();
        state.check()?;
        let after = match state.early.last_key_value() {
            Some((_, last)) => Some(last.log_id),
            None => state.last_log_id,
        };
        if !vote.is_committed()
            || state.vote.as_ref() != Some(vote)
            || prev != after
            || entries.is_empty()
            || state.early.len() + entries.len() > MAX_EARLY_ENTRIES
        {
            return Ok(false);
        }
        // `prev` is this log's own last id here, so the indexes below do not overflow.
        let first = prev.map_or(0, |p| p.index + 1);
        let continues = entries.iter().zip(first..).all(|(e, index)| {
            e.log_id.index == index && e.log_id.leader_id.term == vote.leader_id().term
        });
        if !continues {
            return Ok(false);
        }
        let rows = entries
            .iter()
            .map(|e| Ok((sql_index(e.log_id.index), encode(e)?)))
            .collect::<StorageResult<Vec<_>>>()?;
        self.queue(&mut state, Op::Append { rows }, nothing())?;
        for entry in entries {
            state.early.insert(entry.log_id.index, entry);
        }
        Ok(true)
    }

    /// Appends `entries`, all of which were taken early ([`write_early`](Self::write_early)):
    /// nothing more to write. They are reported flushed once the early write is durable: at
    /// once if nothing is queued (openraft 0.9 awaits each append's callback before it
    /// appends again, so no earlier append's callback is still to come), else after
    /// everything queued so far, by an empty op.
    fn append_written_early<F>(
        &self,
        mut state: parking_lot::MutexGuard<'_, Logical>,
        entries: Vec<Entry>,
        flushed: F,
    ) -> StorageResult<()>
    where
        F: FnOnce(Result<(), Arc<rusqlite::Error>>) + Send + 'static,
    {
        for entry in entries {
            let index = entry.log_id.index;
            state.early.remove(&index);
            state.last_log_id = Some(entry.log_id);
            state.tail.insert(index, entry);
        }
        if state.settled == state.queued {
            drop(state);
            flushed(Ok(()));
            return Ok(());
        }
        self.queue(
            &mut state,
            Op::Append { rows: Vec::new() },
            Box::new(flushed),
        )
    }

    /// Drops the entries taken early that the log will not hold as they are (openraft
    /// appends others, truncates, purges past them, or the vote changes): their rows are
    /// deleted, in queue order, before anything queued after.
    fn abandon_early(&self, state: &mut Logical) -> StorageResult<()> {
        let Some(&first) = state.early.keys().next() else {
            return Ok(());
        };
        state.early.clear();
        self.queue(
            state,
            Op::Truncate {
                from: sql_index(first),
            },
            nothing(),
        )
    }
}

/// Runs on the writer thread after each group: counts it, records failure, and lets the tail
/// give up durable entries once nothing is queued.
fn settle(
    state: &Mutex<Logical>,
    counters: &Counters,
    group: Group,
    outcome: Result<(), &rusqlite::Error>,
) {
    let mut state = state.lock();
    state.settled = group.last_seq;
    match outcome {
        // Nothing written, nothing synced: not a commit worth counting.
        Ok(()) if !group.wrote => {}
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .appends
                .fetch_add(group.appends as u64, Ordering::Relaxed);
            counters
                .entries
                .fetch_add(group.entries as u64, Ordering::Relaxed);
            tracing::trace!(
                target: COMMIT_TARGET,
                appends = group.appends,
                entries = group.entries,
                ops = group.ops,
                "log group committed"
            );
        }
        Err(error) => {
            if state.failed.is_none() {
                state.failed = Some(Arc::new(clone_error(error)));
            }
        }
    }
    if state.settled == state.queued && state.tail.len() > TAIL_KEEP {
        // SQLite now holds exactly the logical log: entries below the new floor can be read
        // from it.
        let keep_from = *state
            .tail
            .keys()
            .nth(state.tail.len() - TAIL_KEEP)
            .expect("the tail is longer than TAIL_KEEP");
        state.tail = state.tail.split_off(&keep_from);
        state.floor = keep_from;
    }
}

/// A copy of `error` for the store's later calls (rusqlite errors are not `Clone`).
fn clone_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

/// Sends `Ok` on `tx` once the op is durable, or the error.
fn reply(tx: tokio::sync::oneshot::Sender<Result<(), Arc<rusqlite::Error>>>) -> Done {
    Box::new(move |outcome| {
        let _ = tx.send(outcome);
    })
}

fn nothing() -> Done {
    Box::new(|_| {})
}

impl RaftLogReader<TypeConfig> for SqliteLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let (start, floor, from_tail) = {
            let state = self.shared.state.lock();
            state.check()?;
            // Purged rows may still be on disk while the purge is queued.
            let start = start.max(state.last_purged.map_or(0, |id| id.index + 1));
            let from = start.max(state.floor);
            let from_tail: Vec<Entry> = if from < end {
                state
                    .tail
                    .range(from..end)
                    .map(|(_, e)| e.clone())
                    .collect()
            } else {
                Vec::new()
            };
            (start, state.floor, from_tail)
        };
        let below_end = end.min(floor);
        if start >= below_end {
            return Ok(from_tail);
        }
        let shared = self.shared.clone();
        let mut entries =
            tokio::task::spawn_blocking(move || read_rows(&shared.reader.lock(), start, below_end))
                .await
                .map_err(read_err)??;
        entries.extend(from_tail);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for SqliteLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let state = self.shared.state.lock();
        state.check()?;
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id: state.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        let value = encode(vote)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = self.shared.state.lock();
            state.check()?;
            if state.vote.as_ref() != Some(vote) {
                self.abandon_early(&mut state)?;
            }
            self.put_meta(&mut state, KEY_VOTE, value, reply(tx))?;
            state.vote = Some(*vote);
        }
        // openraft requires the vote on disk before this returns.
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(failed_err(&error)),
            Err(_) => Err(stopped_err()),
        }
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        let state = self.shared.state.lock();
        state.check()?;
        Ok(state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        let value = encode(&committed)?;
        let mut state = self.shared.state.lock();
        state.check()?;
        // Deferred: losing it in a crash only makes openraft re-apply from the last snapshot.
        let op = Op::Deferred {
            key: KEY_COMMITTED,
            value,
        };
        self.queue(&mut state, op, nothing())?;
        state.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        let state = self.shared.state.lock();
        state.check()?;
        Ok(state.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.append_with(entries, move |outcome| {
            callback.log_io_completed(outcome.map_err(|e| std::io::Error::other(e.to_string())))
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let since = log_id.index;
        let mut state = self.shared.state.lock();
        state.check()?;
        // Entries taken early lie past the log's end: the rows' deletion below covers them.
        state.early.clear();
        state.tail.split_off(&since);
        let was_last = state.last_log_id;
        if since < state.floor {
            state.floor = since;
        }
        state.last_log_id = match state.tail.last_key_value() {
            Some((_, last)) => Some(last.log_id),
            None if was_last.is_none_or(|id| id.index < since) => was_last,
            // Everything left is below the floor, where the durable rows are the log.
            // (Rows at or below the purge, kept until the snapshot covers them, are not.)
            None => read_last_below(&self.shared.reader.lock(), since)?
                .map(|e| e.log_id)
                .filter(|id| Some(*id) > state.last_purged)
                .or(state.last_purged),
        };
        self.queue(
            &mut state,
            Op::Truncate {
                from: sql_index(since),
            },
            nothing(),
        )
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let mut state = self.shared.state.lock();
        state.check()?;
        if state.last_log_id.is_none_or(|id| id.index < log_id.index) {
            // Past the log's end (a follower that installed a snapshot): the entries taken
            // early no longer continue the log.
            self.abandon_early(&mut state)?;
        }
        state.tail = state.tail.split_off(&(log_id.index + 1));
        state.last_purged = Some(log_id);
        if state.last_log_id.is_none_or(|id| id.index < log_id.index) {
            state.last_log_id = Some(log_id);
        }
        self.queue_purge(&mut state)
    }
}
