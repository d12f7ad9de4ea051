//! The durable Raft log and vote store: SQLite (WAL, `synchronous = FULL`), so a write is on
//! disk (fsynced) before openraft is told it is saved.

// openraft's own error types (`StorageError`, `ConfigError`) are large; they are what its
// traits return, so helpers return them unboxed too (as openraft itself does).
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::types::{Entry, LogId, StorageError, StorageResult, TypeConfig, Vote};

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "purged";

/// The log and the vote in one SQLite database. Clones share the connection.
#[derive(Clone)]
pub(crate) struct SqliteLogStore {
    conn: Arc<Mutex<Connection>>,
}

impl Debug for SqliteLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLogStore").finish_non_exhaustive()
    }
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::write(AnyError::new(&e)))
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from(StorageIOError::read(AnyError::new(&e)))
}

/// Encodes a row's value (an entry, the vote, a log id) in the storage format.
fn encode<T: Serialize + ?Sized>(value: &T) -> StorageResult<Vec<u8>> {
    codec::encode(value).map_err(io_err)
}

/// Decodes a row's value.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    codec::decode(bytes).map_err(read_err)
}

/// `idx` as SQLite's signed integer (log indexes stay far below `i64::MAX`).
fn sql_index(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl SqliteLogStore {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS raft_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in a blocking task (SQLite fsyncs on commit).
    async fn run<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StorageResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(io_err)?
    }

    async fn get_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> StorageResult<Option<T>> {
        self.run(move |conn| {
            let value: Option<Vec<u8>> = conn
                .query_row("SELECT value FROM raft_meta WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(read_err)?;
            value.map(|v| decode(&v)).transpose()
        })
        .await
    }

    async fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> StorageResult<()> {
        let bytes = encode(value)?;
        self.run(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO raft_meta (key, value) VALUES (?1, ?2)",
                params![key, bytes],
            )
            .map_err(io_err)?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for SqliteLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => sql_index(*i),
            Bound::Excluded(i) => sql_index(*i).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => sql_index(*i).saturating_add(1),
            Bound::Excluded(i) => sql_index(*i),
            Bound::Unbounded => i64::MAX,
        };
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                )
                .map_err(read_err)?;
            let rows = stmt
                .query_map(params![start, end], |r| r.get::<_, Vec<u8>>(0))
                .map_err(read_err)?;
            rows.map(|row| {
                let bytes = row.map_err(read_err)?;
                decode(&bytes)
            })
            .collect()
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for SqliteLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId> = self.get_meta(KEY_PURGED).await?;
        let last: Option<Entry> = self
            .run(|conn| {
                let bytes: Option<Vec<u8>> = conn
                    .query_row(
                        "SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1",
                        [],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(read_err)?;
                bytes.map(|b| decode(&b)).transpose()
            })
            .await?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.map(|e| e.log_id).or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        self.put_meta(KEY_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        self.get_meta(KEY_VOTE).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        self.put_meta(KEY_COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self
            .get_meta::<Option<LogId>>(KEY_COMMITTED)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((sql_index(e.log_id.index), encode(&e)?)))
            .collect::<StorageResult<Vec<(i64, Vec<u8>)>>>()?;
        let result = self
            .run(move |conn| {
                let tx = conn.transaction().map_err(io_err)?;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)",
                        )
                        .map_err(io_err)?;
                    for (idx, bytes) in &rows {
                        stmt.execute(params![idx, bytes]).map_err(io_err)?;
                    }
                }
                // With `synchronous = FULL` the commit returns once the WAL is fsynced.
                tx.commit().map_err(io_err)
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let from = sql_index(log_id.index);
        self.run(move |conn| {
            conn.execute("DELETE FROM raft_log WHERE idx >= ?1", [from])
                .map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let upto = sql_index(log_id.index);
        let purged = encode(&log_id)?;
        self.run(move |conn| {
            let tx = conn.transaction().map_err(io_err)?;
            tx.execute(
                "INSERT OR REPLACE INTO raft_meta (key, value) VALUES (?1, ?2)",
                params![KEY_PURGED, purged],
            )
            .map_err(io_err)?;
            tx.execute("DELETE FROM raft_log WHERE idx <= ?1", [upto])
                .map_err(io_err)?;
            tx.commit().map_err(io_err)
        })
        .await
    }
}
