//! [`SqliteStorageError`]: everything that can go wrong in a [`SqliteStorage`](crate::SqliteStorage).

use std::path::PathBuf;
use std::sync::Arc;

/// An error of a [`SqliteStorage`](crate::SqliteStorage).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStorageError {
    /// The database file could not be opened or created (missing directory, permissions, ...).
    #[error("cannot open the sqlite database at {path}")]
    Open {
        /// The path given to [`SqliteStorage::open`](crate::SqliteStorage::open).
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The file at the path exists but is not a SQLite database, or is one whose pages are
    /// damaged.
    #[error("{path} is not a SQLite database or is corrupt")]
    NotADatabase {
        /// The path given to [`SqliteStorage::open`](crate::SqliteStorage::open).
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// Another [`SqliteStorage`](crate::SqliteStorage) (in this process or another) still
    /// has the database open for writing: the open waited the lock wait of
    /// [`SqliteStorageOptions`](crate::SqliteStorageOptions) for it to close, and gave up.
    #[error("the sqlite database at {path} is in use by another storage")]
    InUse {
        /// The path given to [`SqliteStorage::open`](crate::SqliteStorage::open).
        path: PathBuf,
    },
    /// The database's lock file (`<database>-lock`) could not be created or locked (missing
    /// directory, permissions, a file system without locks, ...).
    #[error("cannot lock the sqlite database through {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer version of this crate, with a schema this build
    /// does not know; it is left untouched.
    #[error("database schema version {found} is newer than the newest this build supports ({supported})")]
    UnsupportedSchemaVersion {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The database holds a table named like ours that was not written by this crate (no or
    /// several schema-version rows).
    #[error("the database's schema-version table is malformed: {0}")]
    MalformedSchema(String),
    /// SQLite found the database damaged while serving a request.
    #[error("the sqlite database is corrupt")]
    Corrupt(#[source] rusqlite::Error),
    /// A stored row holds a value no write of this crate produces (e.g. a timestamp out of
    /// range): the file was modified behind the storage's back.
    #[error("invalid row in keyspace {keyspace:?}, id {id}: {reason}")]
    InvalidRow {
        /// The row's keyspace.
        keyspace: String,
        /// The row's document id.
        id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The transaction holding this write failed to commit (it may have been shared with
    /// other writes; none of them was applied).
    #[error("the sqlite transaction failed to commit")]
    Commit(#[source] Arc<rusqlite::Error>),
    /// Any other SQLite failure (disk full, I/O error, ...).
    #[error(transparent)]
    Sqlite(rusqlite::Error),
    /// The thread that owns the connection could not be started.
    #[error("cannot start the sqlite worker thread")]
    Spawn(#[source] std::io::Error),
    /// The thread that owns the connection has stopped (it panicked); the storage is unusable.
    #[error("the sqlite worker thread has stopped")]
    WorkerStopped,
}

impl From<rusqlite::Error> for SqliteStorageError {
    fn from(error: rusqlite::Error) -> Self {
        if is_corruption(&error) {
            Self::Corrupt(error)
        } else {
            Self::Sqlite(error)
        }
    }
}

/// Whether `error` says the file is not a database or is damaged.
pub(crate) fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}
