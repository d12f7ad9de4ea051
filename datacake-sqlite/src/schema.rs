//! Opening a connection: pragmas, the versioned schema, and telling a damaged file apart from
//! other failures.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{is_corruption, SqliteStorageError};
use crate::options::Synchronous;

/// The schema version this build writes and reads. A database recording a newer one is
/// refused with [`SqliteStorageError::UnsupportedSchemaVersion`].
pub const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for a lock held by another connection (another process with the
/// same file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: one row per document or tombstone. The id is the `u64` bit-cast to SQLite's
/// `INTEGER` (an `i64`); the timestamp is stored losslessly as its three fields.
const SCHEMA_V1: &str = "
CREATE TABLE keyspaces (
    name TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;
CREATE TABLE documents (
    keyspace   TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    ts_millis  INTEGER NOT NULL,
    ts_counter INTEGER NOT NULL,
    ts_node    INTEGER NOT NULL,
    tombstone  INTEGER NOT NULL,
    data       BLOB    NOT NULL,
    PRIMARY KEY (keyspace, id)
);
";

/// Opens (creating if needed) the database file at `path`, for writing with the given
/// `synchronous` setting.
pub(crate) fn open_file(
    path: &Path,
    synchronous: Synchronous,
) -> Result<Connection, SqliteStorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| {
        if is_corruption(&source) {
            SqliteStorageError::NotADatabase {
                path: path.to_owned(),
                source,
            }
        } else {
            SqliteStorageError::Open {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    prepare(conn, Some(synchronous)).map_err(|error| match error {
        SqliteStorageError::Corrupt(source) => SqliteStorageError::NotADatabase {
            path: path.to_owned(),
            source,
        },
        SqliteStorageError::Sqlite(source) => SqliteStorageError::Open {
            path: path.to_owned(),
            source,
        },
        other => other,
    })
}

/// Opens a second, read-only connection to the database at `path` (already opened and
/// migrated by [`open_file`]). In WAL mode it reads without waiting for writers, and sees
/// every transaction that committed before its read started.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, SqliteStorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let open_error = |source| SqliteStorageError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    conn.query_row("SELECT version FROM datacake_schema", [], |_| Ok(()))
        .map_err(open_error)?;
    Ok(conn)
}

/// Opens a fresh in-memory database.
pub(crate) fn open_in_memory() -> Result<Connection, SqliteStorageError> {
    prepare(Connection::open_in_memory()?, None)
}

/// Sets the pragmas and creates or checks the schema. `on_disk` is the `synchronous` setting
/// of a file's writing connection, `None` for an in-memory database (no file, no WAL).
fn prepare(
    mut conn: Connection,
    on_disk: Option<Synchronous>,
) -> Result<Connection, SqliteStorageError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if let Some(synchronous) = on_disk {
        // The first statement that reads the file: a non-SQLite file fails here.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "sqlite refused WAL mode");
        }
        // A per-connection setting (not stored in the file), so it is set on every open; it
        // matters on this connection, the one that commits. Set outside any transaction
        // (SQLite refuses to change it inside one). See `Synchronous` for what each loses.
        conn.pragma_update(None, "synchronous", synchronous.pragma_value())?;
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Creates the schema of a new database, or checks the version of an existing one.
fn migrate(conn: &mut Connection) -> Result<(), SqliteStorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS datacake_schema (version INTEGER NOT NULL);")?;
    let versions: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT version FROM datacake_schema")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    match versions.as_slice() {
        [] => {
            tx.execute_batch(SCHEMA_V1)?;
            tx.execute(
                "INSERT INTO datacake_schema (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
            tracing::debug!(version = SCHEMA_VERSION, "created sqlite schema");
        }
        [version] if *version == SCHEMA_VERSION => {}
        [version] if *version > SCHEMA_VERSION => {
            return Err(SqliteStorageError::UnsupportedSchemaVersion {
                found: *version,
                supported: SCHEMA_VERSION,
            })
        }
        [version] => {
            return Err(SqliteStorageError::MalformedSchema(format!(
                "unknown schema version {version}"
            )))
        }
        many => {
            return Err(SqliteStorageError::MalformedSchema(format!(
                "{} schema-version rows, expected one",
                many.len()
            )))
        }
    }
    tx.commit()?;
    Ok(())
}
