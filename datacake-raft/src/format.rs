//! The storage format version of the durable files ([`FORMAT_VERSION`]): the SQLite log
//! carries it as the database's `user_version`, the snapshot file in a header. A file of
//! another version, or an unversioned one (the JSON of releases before format 1), is refused
//! when the node starts ([`RaftError::IncompatibleFormat`]) instead of being misread.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::codec::FORMAT_VERSION;
use crate::error::RaftError;

/// The first bytes of a snapshot file, before its format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"dcraftsn";

/// The snapshot file's header: [`SNAPSHOT_MAGIC`], then [`FORMAT_VERSION`] (little endian).
pub(crate) fn snapshot_header() -> [u8; 12] {
    let mut header = [0; 12];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// The snapshot file at `path` without its header, or why it is refused: a header of
/// another version, or none.
pub(crate) fn strip_snapshot_header<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<&'a [u8], RaftError> {
    let found = match bytes.split_first_chunk::<12>() {
        Some((header, rest)) if header == &snapshot_header() => return Ok(rest),
        Some((header, _)) if header.starts_with(SNAPSHOT_MAGIC) => {
            let version: [u8; 4] = header[8..].try_into().unwrap_or_default();
            Some(u32::from_le_bytes(version))
        }
        _ => None,
    };
    Err(mismatch(path, found))
}

/// Checks the log database at `path` before it is used: a database of this format passes; a
/// new one (no Raft data yet) is stamped with it; any other is refused.
pub(crate) fn check_log(path: &Path) -> Result<(), RaftError> {
    let storage = |e: rusqlite::Error| RaftError::storage(path.display().to_string(), e);
    let conn = Connection::open(path).map_err(storage)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    match version {
        v if v == i64::from(FORMAT_VERSION) => Ok(()),
        0 if !holds_raft_data(&conn).map_err(storage)? => conn
            .pragma_update(None, "user_version", FORMAT_VERSION)
            .map_err(storage),
        0 => Err(mismatch(path, None)),
        v => Err(mismatch(path, Some(u32::try_from(v).unwrap_or(u32::MAX)))),
    }
}

/// `true` if the database has a Raft log entry or metadata row (a vote, a purge mark).
fn holds_raft_data(conn: &Connection) -> rusqlite::Result<bool> {
    for table in ["raft_log", "raft_meta"] {
        let exists: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            let rows: bool =
                conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                    r.get(0)
                })?;
            if rows {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn mismatch(path: &Path, found: Option<u32>) -> RaftError {
    RaftError::IncompatibleFormat {
        path: path.to_path_buf(),
        found,
        expected: FORMAT_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{check_log, snapshot_header, strip_snapshot_header};
    use crate::codec::FORMAT_VERSION;
    use crate::error::RaftError;

    fn found(result: Result<impl std::fmt::Debug, RaftError>) -> Option<u32> {
        match result {
            Err(RaftError::IncompatibleFormat {
                found, expected, ..
            }) => {
                assert_eq!(expected, FORMAT_VERSION);
                found
            }
            other => panic!("expected IncompatibleFormat, got {other:?}"),
        }
    }

    #[test]
    fn a_new_log_is_stamped_and_then_accepted() {
        let dir = test_helper::TempDir::new("format-new-log");
        let path = dir.join("log.sqlite");
        check_log(&path).expect("a new log is accepted");
        let conn = Connection::open(&path).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, FORMAT_VERSION);
        drop(conn);
        check_log(&path).expect("a log of this format is accepted");
    }

    #[test]
    fn a_log_of_another_version_is_refused() {
        let dir = test_helper::TempDir::new("format-other-log");
        let path = dir.join("log.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", FORMAT_VERSION + 1)
            .unwrap();
        drop(conn);
        assert_eq!(found(check_log(&path)), Some(FORMAT_VERSION + 1));
    }

    #[test]
    fn an_unversioned_json_log_is_refused() {
        let dir = test_helper::TempDir::new("format-json-log");
        let path = dir.join("log.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE raft_log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE raft_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             INSERT INTO raft_meta (key, value)
                 VALUES ('vote', CAST('{\"leader_id\":{\"term\":1,\"node_id\":1},\"committed\":true}' AS BLOB));",
        )
        .unwrap();
        drop(conn);
        assert_eq!(found(check_log(&path)), None);
    }

    #[test]
    fn snapshot_headers_of_other_versions_are_refused() {
        let path = std::path::Path::new("snapshot.bin");
        let mut file = snapshot_header().to_vec();
        file.extend_from_slice(b"rest");
        assert_eq!(strip_snapshot_header(path, &file).unwrap(), b"rest");

        file[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            found(strip_snapshot_header(path, &file)),
            Some(FORMAT_VERSION + 1)
        );

        // The JSON layout: the meta's length, then JSON.
        let mut json = 2u64.to_le_bytes().to_vec();
        json.extend_from_slice(b"{}");
        assert_eq!(found(strip_snapshot_header(path, &json)), None);
        assert_eq!(found(strip_snapshot_header(path, b"")), None);
    }
}
