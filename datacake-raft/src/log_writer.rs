//! The thread that writes the durable log: it owns the SQLite write connection and commits
//! whatever was queued while its previous commit ran in one transaction (group commit).
//!
//! The store hands it [`Op`]s in the order openraft issued them; the thread applies them in
//! that order, so a vote saved after an append is never durable without that append. After a
//! transaction commits (`synchronous = FULL`: the WAL is fsynced), it runs each op's
//! completion in queue order: the `LogFlushed` callbacks of appends, the replies of votes.
//!
//! Unlike `datacake-sqlite`'s worker (one savepoint per write, so a failing write is rolled
//! back alone), a failed transaction here fails every later op too: the store has already
//! shown the failed entries to openraft, so writing anything after them would leave a hole.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};

/// A group takes no more ops once it holds this many rows, so one commit never waits on an
/// unbounded amount of work.
const MAX_GROUP_ROWS: usize = 4096;

/// How long a group of only [`Op::Deferred`] ops waits for another op before it commits
/// alone, by default.
pub(crate) const DEFER: Duration = Duration::from_millis(100);

/// Runs once the op's transaction is settled: `Ok` once it is durable, or why it is not.
pub(crate) type Done = Box<dyn FnOnce(Result<(), Arc<rusqlite::Error>>) + Send>;

/// One write, already encoded.
pub(crate) enum Op {
    /// Insert (or overwrite) `(index, entry)` rows. With no rows it writes nothing, and its
    /// completion runs once everything queued before it is settled.
    Append { rows: Vec<(i64, Vec<u8>)> },
    /// Delete the rows from `from` on.
    Truncate { from: i64 },
    /// Delete the rows up to `upto` and set the metadata `key` (the purged log id) to `value`.
    Purge {
        upto: i64,
        key: &'static str,
        value: Vec<u8>,
    },
    /// Set a metadata key (the vote).
    Meta { key: &'static str, value: Vec<u8> },
    /// Set a metadata key whose loss in a crash is harmless (the committed log id: without
    /// it, openraft re-applies from the last snapshot). It does not cost an fsync of its own
    /// while others follow: it waits a while ([`DEFER`] by default) for another op to commit with.
    Deferred { key: &'static str, value: Vec<u8> },
}

impl Op {
    /// An append of no rows: it only waits for everything queued before it.
    fn is_empty(&self) -> bool {
        matches!(self, Op::Append { rows } if rows.is_empty())
    }

    fn rows(&self) -> usize {
        match self {
            Op::Append { rows } => rows.len().max(1),
            _ => 1,
        }
    }

    fn apply(&self, tx: &Connection) -> rusqlite::Result<()> {
        match self {
            Op::Append { rows } => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)",
                )?;
                for (idx, bytes) in rows {
                    stmt.execute(params![idx, bytes])?;
                }
            }
            Op::Truncate { from } => {
                tx.execute("DELETE FROM raft_log WHERE idx >= ?1", [from])?;
            }
            Op::Purge { upto, key, value } => {
                put_meta(tx, key, value)?;
                tx.execute("DELETE FROM raft_log WHERE idx <= ?1", [upto])?;
            }
            Op::Meta { key, value } | Op::Deferred { key, value } => put_meta(tx, key, value)?,
        }
        Ok(())
    }
}

fn put_meta(tx: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO raft_meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

/// What one group commit wrote, reported to [`Writer::spawn`]'s `committed` hook.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    /// The sequence number of the last op in the group (ops are numbered from 1 in the order
    /// they were queued).
    pub(crate) last_seq: u64,
    /// How many appends the group held.
    pub(crate) appends: usize,
    /// How many entries those appends held.
    pub(crate) entries: usize,
    /// How many ops the group held in all.
    pub(crate) ops: usize,
    /// Whether the group changed anything: a group of only empty appends (see
    /// [`Op::Append`]) commits without writing or syncing.
    pub(crate) wrote: bool,
}

/// The sending side of the writer's queue. Dropping it stops the thread once the queue is
/// drained; the thread then closes the connection.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<(Op, Done)>,
}

impl Writer {
    /// Starts the writer thread on `conn`. `committed` runs on that thread after each group
    /// is settled and before the group's completions (with `Err` if the group failed). A
    /// group of only [`Op::Deferred`] ops waits up to `defer` for another op.
    pub(crate) fn spawn<F>(conn: Connection, defer: Duration, committed: F) -> std::io::Result<Self>
    where
        F: FnMut(Group, Result<(), &rusqlite::Error>) + Send + 'static,
    {
        let (queue, jobs) = mpsc::channel();
        thread::Builder::new()
            .name("datacake-raft-log".into())
            .spawn(move || serve(conn, &jobs, defer, committed))?;
        Ok(Self { queue })
    }

    /// Queues `op`; `done` runs once it is durable (or failed). Fails if the thread is gone.
    pub(crate) fn send(&self, op: Op, done: Done) -> Result<(), ()> {
        self.queue.send((op, done)).map_err(|_| ())
    }
}

fn serve<F>(
    mut conn: Connection,
    jobs: &mpsc::Receiver<(Op, Done)>,
    defer: Duration,
    mut committed: F,
) where
    F: FnMut(Group, Result<(), &rusqlite::Error>),
{
    let mut seq = 0u64;
    let mut failed: Option<Arc<rusqlite::Error>> = None;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        // Deferred ops alone wait for company (or for the queue to close).
        while group
            .iter()
            .all(|(op, _)| matches!(op, Op::Deferred { .. }))
        {
            match jobs.recv_timeout(defer) {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcome = match &failed {
            Some(error) => {
                while let Ok(job) = jobs.try_recv() {
                    group.push(job);
                }
                Err(error.clone())
            }
            None => write_group(&mut conn, jobs, &mut group).map_err(Arc::new),
        };
        seq += group.len() as u64;
        let summary = Group {
            last_seq: seq,
            appends: group
                .iter()
                .filter(|(op, _)| matches!(op, Op::Append { .. }))
                .count(),
            entries: group
                .iter()
                .map(|(op, _)| match op {
                    Op::Append { rows } => rows.len(),
                    _ => 0,
                })
                .sum(),
            ops: group.len(),
            wrote: group.iter().any(|(op, _)| !op.is_empty()),
        };
        if let Err(error) = &outcome {
            if failed.is_none() {
                tracing::error!(%error, ops = group.len(), "raft log write failed");
                failed = Some(error.clone());
            }
        }
        committed(summary, outcome.as_ref().map(|_| ()).map_err(|e| &**e));
        for (_, done) in group {
            done(outcome.clone());
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing the raft log failed");
    }
}

/// Writes the ops in `group` and every op queued behind them (also those queued while the
/// transaction waited for the database lock) in one transaction and commits it: one fsync.
/// The ops end up in `group`, whatever the outcome (on error the transaction is rolled back,
/// and the ops still queued fail with the next group).
fn write_group(
    conn: &mut Connection,
    jobs: &mpsc::Receiver<(Op, Done)>,
    group: &mut Vec<(Op, Done)>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rows = 0;
    for (op, _) in group.iter() {
        rows += op.rows();
        op.apply(&tx)?;
    }
    while rows < MAX_GROUP_ROWS {
        let Ok(job) = jobs.try_recv() else { break };
        rows += job.0.rows();
        group.push(job);
        group[group.len() - 1].0.apply(&tx)?;
    }
    // With `synchronous = FULL` the commit returns once the WAL is fsynced.
    tx.commit()
}
