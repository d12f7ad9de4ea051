//! The thread that owns the SQLite connection, and the channel that feeds it.
//!
//! Every SQLite call of a storage runs on this one thread, so blocking disk I/O never runs on
//! an async runtime's worker threads. Callers send a closure and await its result on a
//! oneshot channel.
//!
//! **Group commit.** Writes that are queued together run in one transaction, each inside its
//! own savepoint (so a failing write is rolled back alone), and are all acknowledged after
//! that transaction commits. Many concurrent callers then share one commit instead of paying
//! one each; a lone caller still gets a transaction of its own.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::SqliteStorageError;
use crate::lock::DbLock;

/// A group takes no more writes once it holds this many rows (a write of `n` documents counts
/// `n`), so one commit never waits on an unbounded amount of work.
const MAX_GROUP_ROWS: usize = 4096;

/// Run once the group's transaction is settled: `None` if it committed, or the error.
type Completion = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;
/// A write: runs on the connection (`None`: it cannot run, the group already failed) and
/// reports whether it succeeded, and how to answer its caller once the group is settled.
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;
/// A read, run on its own between write groups.
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    Read(ReadJob),
    /// A write and the number of rows it touches.
    Write(WriteJob, usize),
}

/// A connection the worker serves, and the database lock its thread holds while it does
/// (the writing connection's; see [`DbLock`]).
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    pub(crate) lock: Option<DbLock>,
}

impl From<Connection> for Opened {
    fn from(conn: Connection) -> Self {
        Self { conn, lock: None }
    }
}

/// The sending side of the worker's queue. Dropping every clone stops the thread, which then
/// closes the connection.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts a thread that opens the connection with `open` and then serves jobs. Resolves
    /// once `open` has finished, with its error if it failed. A lock `open` returned is held
    /// until the thread has served its last job and closed the connection.
    pub(crate) async fn spawn<F, O>(name: String, open: F) -> Result<Self, SqliteStorageError>
    where
        F: FnOnce() -> Result<O, SqliteStorageError> + Send + 'static,
        O: Into<Opened>,
    {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = oneshot::channel();
        thread::Builder::new()
            .name(name)
            .spawn(move || {
                let Opened { conn, lock } = match open() {
                    Ok(opened) => {
                        let _ = opened_tx.send(Ok(()));
                        opened.into()
                    }
                    Err(error) => {
                        let _ = opened_tx.send(Err(error));
                        return;
                    }
                };
                serve(conn, &queue);
                drop(lock);
            })
            .map_err(SqliteStorageError::Spawn)?;
        opened_rx
            .await
            .map_err(|_| SqliteStorageError::WorkerStopped)??;
        Ok(Self { jobs })
    }

    /// Runs the read `f` on the connection's thread and returns its result.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, SqliteStorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SqliteStorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Read(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        self.jobs
            .send(job)
            .map_err(|_| SqliteStorageError::WorkerStopped)?;
        rx.await.map_err(|_| SqliteStorageError::WorkerStopped)?
    }

    /// Runs the write `f`, which touches about `rows` rows, in a transaction (possibly shared
    /// with other writes, see the module docs) and returns once that transaction committed. On
    /// error nothing `f` did is kept.
    pub(crate) async fn write<F>(&self, rows: usize, f: F) -> Result<(), SqliteStorageError>
    where
        F: FnOnce(&Connection) -> Result<(), SqliteStorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Write(
            Box::new(move |conn| {
                let result = conn.map(f);
                let ok = matches!(result, Some(Ok(())));
                let completion: Completion = Box::new(move |commit| {
                    let reply = match (result, commit) {
                        (Some(Err(error)), _) => Err(error),
                        (_, Some(error)) => Err(SqliteStorageError::Commit(error.clone())),
                        (Some(Ok(())), None) => Ok(()),
                        (None, None) => Err(SqliteStorageError::WorkerStopped),
                    };
                    let _ = tx.send(reply);
                });
                (ok, completion)
            }),
            rows.max(1),
        );
        self.jobs
            .send(job)
            .map_err(|_| SqliteStorageError::WorkerStopped)?;
        rx.await.map_err(|_| SqliteStorageError::WorkerStopped)?
    }
}

/// The worker thread's loop: until every sender is gone.
fn serve(mut conn: Connection, queue: &mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        match job {
            Job::Read(read) => read(&mut conn),
            Job::Write(write, rows) => next = write_group(&mut conn, queue, write, rows),
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing the sqlite connection failed");
    }
}

/// Runs `first` and whatever writes are already queued behind it in one transaction, then
/// answers them all. Returns the read that ended the group, if one did.
fn write_group(
    conn: &mut Connection,
    queue: &mpsc::Receiver<Job>,
    first: WriteJob,
    first_rows: usize,
) -> Option<Job> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            let (_, completion) = first(None);
            completion(Some(&Arc::new(error)));
            return None;
        }
    };
    let mut completions: Vec<Completion> = Vec::new();
    let mut rows = first_rows;
    let mut failure = None;
    let mut leftover = None;
    let mut current = Some(first);
    while let Some(job) = current.take() {
        match tx.savepoint() {
            Ok(savepoint) => {
                let (ok, completion) = job(Some(&savepoint));
                completions.push(completion);
                // Keep a successful write; roll a failed one back alone.
                let settled = if ok {
                    savepoint.commit()
                } else {
                    savepoint.finish()
                };
                if let Err(error) = settled {
                    failure = Some(error);
                    break;
                }
            }
            Err(error) => {
                completions.push(job(None).1);
                failure = Some(error);
                break;
            }
        }
        if rows >= MAX_GROUP_ROWS {
            break;
        }
        match queue.try_recv() {
            Ok(Job::Write(write, more)) => {
                rows += more;
                current = Some(write);
            }
            Ok(read) => leftover = Some(read),
            Err(_) => {}
        }
    }
    let outcome = match failure {
        Some(error) => Err(error),
        None => tx.commit(),
    };
    let error = outcome.err().map(Arc::new);
    if let Some(error) = &error {
        tracing::warn!(%error, writes = completions.len(), "sqlite write group failed");
    }
    for completion in completions {
        completion(error.as_ref());
    }
    leftover
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `n` writes at once (so they share transactions); the odd ones violate a CHECK
    /// constraint and must fail alone.
    #[tokio::test]
    async fn a_failing_write_in_a_group_is_rolled_back_alone() {
        let worker = Worker::spawn("test".into(), || {
            let conn = Connection::open_in_memory()?;
            conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL CHECK (x % 2 = 0))")?;
            Ok(conn)
        })
        .await
        .unwrap();
        let writes: Vec<_> = (0..200i64)
            .map(|x| {
                let worker = worker.clone();
                tokio::spawn(async move {
                    worker
                        .write(1, move |conn| {
                            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for (x, write) in writes.into_iter().enumerate() {
            let result = write.await.unwrap();
            assert_eq!(result.is_ok(), x % 2 == 0, "write {x}: {result:?}");
        }
        let stored: Vec<i64> = worker
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = stmt.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(stored, (0..200).step_by(2).collect::<Vec<_>>());
    }
}
