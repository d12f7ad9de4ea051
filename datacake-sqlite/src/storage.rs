//! [`SqliteStorage`] and its [`Storage`] implementation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::{BulkMutationError, Document, Key, Metadata, Storage};
use rusqlite::{params, Connection, Row};

use crate::error::SqliteStorageError;
use crate::lock::DbLock;
use crate::options::SqliteStorageOptions;
use crate::schema;
use crate::worker::{Opened, Worker};

/// A durable [`Storage`] in one SQLite database (bundled SQLite, no system library).
///
/// - Every SQLite call runs on a dedicated thread that owns a connection (one for writes and,
///   on disk, one more for reads, so reads proceed while a write commits); the async methods
///   send it work over a channel, so they never block a runtime worker thread.
/// - The database is in WAL mode, by default with `synchronous = NORMAL`: once a write has
///   returned `Ok`, it survives the process being killed (even with `SIGKILL`). A power loss
///   or OS crash may lose the last few commits (SQLite's documented trade-off for WAL +
///   NORMAL); open with [`Synchronous::Full`](crate::Synchronous::Full) (see
///   [`open_with`](Self::open_with)) to keep them, at one fsync per commit.
/// - Bulk writes ([`multi_put`](Storage::multi_put), ...) are all or nothing. Writes queued
///   together share one transaction (group commit), each in its own savepoint.
/// - The schema is versioned; see [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
///
/// Cloning is cheap and shares the connections. They close when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    writer: Worker,
    reader: Worker,
    path: Option<Arc<Path>>,
}

impl SqliteStorage {
    /// Opens the database at `path`, creating the file and the schema if needed, with the
    /// default options (`synchronous = NORMAL`; [`open_with`](Self::open_with) chooses).
    ///
    /// One storage at a time writes a database: the open locks `<path>-lock` (created beside
    /// the database) until the storage's last clone is dropped and its last write committed,
    /// and fails with [`SqliteStorageError::InUse`] if another storage, in this process or
    /// another, still holds it after the lock wait (default 5 s,
    /// [`SqliteStorageOptions::with_lock_wait`]).
    ///
    /// Fails with [`SqliteStorageError::NotADatabase`] if the file is not a SQLite database
    /// (or is damaged), [`SqliteStorageError::UnsupportedSchemaVersion`] if it was written by a
    /// newer schema, [`SqliteStorageError::Lock`] if the lock file cannot be created, and
    /// [`SqliteStorageError::Open`] if the database cannot be opened at all.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use datacake_sqlite::SqliteStorage;
    ///
    /// let dir = std::env::temp_dir().join(format!("datacake-sqlite-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let storage = SqliteStorage::open(dir.join("data.db")).await?;
    /// assert_eq!(storage.path(), Some(dir.join("data.db").as_path()));
    /// # drop(storage);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SqliteStorageError> {
        Self::open_with(path, SqliteStorageOptions::default()).await
    }

    /// Like [`open`](Self::open), with the given options (e.g. `synchronous = FULL`, see
    /// [`Synchronous`](crate::Synchronous)); [`open`](Self::open) uses the defaults.
    ///
    /// The options are settings of the connections, not of the file: a database can be
    /// reopened with other options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use datacake_sqlite::{SqliteStorage, SqliteStorageOptions, Synchronous};
    ///
    /// let dir = std::env::temp_dir().join(format!("datacake-sqlite-doc-with-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// // Acknowledged writes survive a power loss, at one fsync per commit.
    /// let options = SqliteStorageOptions::new().with_synchronous(Synchronous::Full);
    /// let storage = SqliteStorage::open_with(dir.join("data.db"), options).await?;
    /// # drop(storage);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    #[tracing::instrument(
        skip_all,
        fields(path = %path.as_ref().display(), synchronous = ?options.synchronous())
    )]
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteStorageOptions,
    ) -> Result<Self, SqliteStorageError> {
        let path: PathBuf = path.as_ref().to_owned();
        let opened = path.clone();
        let synchronous = options.synchronous();
        let lock_wait = options.lock_wait();
        let writer = Worker::spawn("datacake-sqlite".into(), move || {
            // Before the file is read: another storage may still be writing it.
            let lock = DbLock::acquire(&opened, lock_wait)?;
            let conn = schema::open_file(&opened, synchronous)?;
            Ok(Opened {
                conn,
                lock: Some(lock),
            })
        })
        .await?;
        let opened = path.clone();
        let reader = Worker::spawn("datacake-sqlite-read".into(), move || {
            schema::open_reader(&opened)
        })
        .await?;
        tracing::debug!(path = %path.display(), "opened sqlite storage");
        Ok(Self {
            writer,
            reader,
            path: Some(Arc::from(path)),
        })
    }

    /// Opens a fresh, empty database that lives in memory (gone when the storage is dropped).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use datacake_crdt::HLCTimestamp;
    /// use datacake_eventual_consistency::{Document, Storage};
    /// use datacake_sqlite::SqliteStorage;
    ///
    /// let storage = SqliteStorage::open_in_memory().await?;
    /// let doc = Document::new(7, HLCTimestamp::new(1_000, 0, 1), "hello");
    /// storage.put("greetings", doc.clone()).await?;
    /// assert_eq!(storage.get("greetings", 7).await?, Some(doc));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_in_memory() -> Result<Self, SqliteStorageError> {
        // One connection: an in-memory database is private to its connection.
        let worker = Worker::spawn("datacake-sqlite-mem".into(), schema::open_in_memory).await?;
        Ok(Self {
            writer: worker.clone(),
            reader: worker,
            path: None,
        })
    }

    /// The database file, or `None` for an in-memory storage.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs a bulk write; on failure nothing was applied.
    async fn bulk<F>(&self, rows: usize, f: F) -> Result<(), BulkMutationError<SqliteStorageError>>
    where
        F: FnOnce(&Connection) -> Result<(), SqliteStorageError> + Send + 'static,
    {
        self.writer
            .write(rows, f)
            .await
            .map_err(BulkMutationError::empty)
    }
}

fn ensure_keyspace(conn: &Connection, keyspace: &str) -> Result<(), SqliteStorageError> {
    conn.prepare_cached("INSERT OR IGNORE INTO keyspaces (name) VALUES (?1)")?
        .execute([keyspace])?;
    Ok(())
}

/// Writes one row: a document, or (with `data = None`) a tombstone.
fn upsert(
    conn: &Connection,
    keyspace: &str,
    id: Key,
    ts: HLCTimestamp,
    data: Option<&[u8]>,
) -> Result<(), SqliteStorageError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO documents \
         (keyspace, id, ts_millis, ts_counter, ts_node, tombstone, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        keyspace,
        id as i64,
        ts.millis() as i64,
        ts.counter(),
        ts.node(),
        data.is_none(),
        data.unwrap_or(&[]),
    ])?;
    Ok(())
}

/// Reads the timestamp columns (2, 3, 4) of `row`, refusing values no write produces.
fn timestamp(keyspace: &str, id: Key, row: &Row<'_>) -> Result<HLCTimestamp, SqliteStorageError> {
    let (millis, counter, node): (i64, i64, i64) = (row.get(2)?, row.get(3)?, row.get(4)?);
    let invalid = |reason: String| SqliteStorageError::InvalidRow {
        keyspace: keyspace.to_owned(),
        id,
        reason,
    };
    let millis = u64::try_from(millis).map_err(|_| invalid(format!("millis {millis}")))?;
    let counter = u16::try_from(counter).map_err(|_| invalid(format!("counter {counter}")))?;
    let node = u32::try_from(node).map_err(|_| invalid(format!("node {node}")))?;
    HLCTimestamp::try_new(millis, counter, node).map_err(|e| invalid(e.to_string()))
}

/// Reads a live document row `(id, data, ts_millis, ts_counter, ts_node)`.
fn document(keyspace: &str, row: &Row<'_>) -> Result<Document, SqliteStorageError> {
    let id = row.get::<_, i64>(0)? as u64;
    let data: Vec<u8> = row.get(1)?;
    Ok(Document {
        id,
        last_updated: timestamp(keyspace, id, row)?,
        data: Bytes::from(data),
    })
}

const SELECT_LIVE: &str = "SELECT id, data, ts_millis, ts_counter, ts_node FROM documents \
                           WHERE keyspace = ?1 AND id = ?2 AND tombstone = 0";

#[async_trait]
impl Storage for SqliteStorage {
    type Error = SqliteStorageError;

    async fn get_keyspace_list(&self) -> Result<Vec<String>, Self::Error> {
        self.reader
            .read(|conn| {
                let mut stmt = conn.prepare_cached("SELECT name FROM keyspaces")?;
                let names = stmt
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(names)
            })
            .await
    }

    async fn iter_metadata(&self, keyspace: &str) -> Result<Vec<Metadata>, Self::Error> {
        let keyspace = keyspace.to_owned();
        self.reader
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, tombstone, ts_millis, ts_counter, ts_node FROM documents \
                     WHERE keyspace = ?1",
                )?;
                let mut rows = stmt.query([&keyspace])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let id = row.get::<_, i64>(0)? as u64;
                    let tombstone: bool = row.get(1)?;
                    out.push((id, timestamp(&keyspace, id, row)?, tombstone));
                }
                Ok(out)
            })
            .await
    }

    async fn remove_tombstones(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        let keyspace = keyspace.to_owned();
        self.bulk(keys.len(), move |conn| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM documents WHERE keyspace = ?1 AND id = ?2 AND tombstone = 1",
            )?;
            for key in keys {
                stmt.execute(params![keyspace, key as i64])?;
            }
            Ok(())
        })
        .await
    }

    async fn put(&self, keyspace: &str, document: Document) -> Result<(), Self::Error> {
        let keyspace = keyspace.to_owned();
        self.writer
            .write(1, move |conn| {
                ensure_keyspace(conn, &keyspace)?;
                upsert(
                    conn,
                    &keyspace,
                    document.id,
                    document.last_updated,
                    Some(&document.data),
                )
            })
            .await
    }

    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        let keyspace = keyspace.to_owned();
        self.bulk(documents.len(), move |conn| {
            ensure_keyspace(conn, &keyspace)?;
            for doc in &documents {
                upsert(conn, &keyspace, doc.id, doc.last_updated, Some(&doc.data))?;
            }
            Ok(())
        })
        .await
    }

    async fn mark_as_tombstone(
        &self,
        keyspace: &str,
        key: Key,
        timestamp: HLCTimestamp,
    ) -> Result<(), Self::Error> {
        let keyspace = keyspace.to_owned();
        self.writer
            .write(1, move |conn| {
                ensure_keyspace(conn, &keyspace)?;
                upsert(conn, &keyspace, key, timestamp, None)
            })
            .await
    }

    async fn mark_many_as_tombstone(
        &self,
        keyspace: &str,
        keys: Vec<(Key, HLCTimestamp)>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        let keyspace = keyspace.to_owned();
        self.bulk(keys.len(), move |conn| {
            ensure_keyspace(conn, &keyspace)?;
            for (key, timestamp) in keys {
                upsert(conn, &keyspace, key, timestamp, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, keyspace: &str, key: Key) -> Result<Option<Document>, Self::Error> {
        let keyspace = keyspace.to_owned();
        self.reader
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(SELECT_LIVE)?;
                let mut rows = stmt.query(params![keyspace, key as i64])?;
                rows.next()?.map(|row| document(&keyspace, row)).transpose()
            })
            .await
    }

    async fn multi_get(
        &self,
        keyspace: &str,
        mut keys: Vec<Key>,
    ) -> Result<Vec<Document>, Self::Error> {
        let keyspace = keyspace.to_owned();
        keys.sort_unstable();
        keys.dedup();
        self.reader
            .read(move |conn| {
                // One read transaction: a consistent snapshot across the keys.
                let tx = conn.transaction()?;
                let mut out = Vec::with_capacity(keys.len());
                {
                    let mut stmt = tx.prepare_cached(SELECT_LIVE)?;
                    for key in keys {
                        let mut rows = stmt.query(params![keyspace, key as i64])?;
                        if let Some(row) = rows.next()? {
                            out.push(document(&keyspace, row)?);
                        }
                    }
                }
                tx.finish()?;
                Ok(out)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use test_helper::TempDir;

    use super::*;
    use crate::Synchronous;

    /// `PRAGMA synchronous` as read on the connection that writes and commits (0 OFF,
    /// 1 NORMAL, 2 FULL, 3 EXTRA).
    async fn writer_synchronous(storage: &SqliteStorage) -> i64 {
        storage
            .writer
            .read(|conn| Ok(conn.pragma_query_value(None, "synchronous", |row| row.get(0))?))
            .await
            .unwrap()
    }

    async fn journal_mode(storage: &SqliteStorage) -> String {
        storage
            .writer
            .read(|conn| Ok(conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_chosen_synchronous_setting_is_applied_to_the_writer() {
        let dir = TempDir::new("synchronous");
        let cases = [
            ("default.db", None, 1),
            ("normal.db", Some(Synchronous::Normal), 1),
            ("full.db", Some(Synchronous::Full), 2),
        ];
        for (file, synchronous, expected) in cases {
            let path = dir.join(file);
            let storage = match synchronous {
                None => SqliteStorage::open(&path).await.unwrap(),
                Some(synchronous) => SqliteStorage::open_with(
                    &path,
                    SqliteStorageOptions::new().with_synchronous(synchronous),
                )
                .await
                .unwrap(),
            };
            assert_eq!(
                writer_synchronous(&storage).await,
                expected,
                "{file}: {synchronous:?}"
            );
            assert_eq!(journal_mode(&storage).await, "wal", "{file}");
        }
    }

    /// The setting belongs to the connection, not the file: reopening with other options
    /// takes the new ones and keeps the data.
    #[tokio::test]
    async fn a_database_can_be_reopened_with_another_synchronous_setting() {
        let dir = TempDir::new("resync");
        let path = dir.join("data.db");
        let doc = Document::new(1, HLCTimestamp::new(1_000, 0, 1), "kept");
        let full = SqliteStorageOptions::new().with_synchronous(Synchronous::Full);
        {
            let storage = SqliteStorage::open_with(&path, full.clone()).await.unwrap();
            assert_eq!(writer_synchronous(&storage).await, 2);
            storage.put("ks", doc.clone()).await.unwrap();
        }
        {
            let storage = SqliteStorage::open(&path).await.unwrap();
            assert_eq!(writer_synchronous(&storage).await, 1);
            assert_eq!(storage.get("ks", 1).await.unwrap(), Some(doc.clone()));
        }
        let storage = SqliteStorage::open_with(&path, full).await.unwrap();
        assert_eq!(writer_synchronous(&storage).await, 2);
        assert_eq!(storage.get("ks", 1).await.unwrap(), Some(doc));
    }
}
