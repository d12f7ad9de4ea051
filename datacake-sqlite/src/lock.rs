//! The database's lock file: one [`SqliteStorage`](crate::SqliteStorage) at a time writes a
//! database file.
//!
//! Two storages on one file (a second process given the same path, or a store reopened in
//! the same process while the previous one still commits its last writes) would each keep
//! their own idea of the documents in memory while sharing their rows: one could overwrite
//! the other's tombstone with an older document it never saw deleted, and a delete would come
//! back at the next restart. The file `<database>-lock` beside the database carries an
//! exclusive advisory lock (`flock` on Unix, `LockFileEx` on Windows) for as long as the
//! writing thread runs, so until it has committed its last write. The operating system drops
//! the lock with the process: a killed node reopens its database at once.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::SqliteStorageError;

/// How often a waiting open tries the lock again.
const RETRY: Duration = Duration::from_millis(10);

/// Holds a database's lock until dropped.
#[derive(Debug)]
pub(crate) struct DbLock {
    _file: File,
}

impl DbLock {
    /// Takes the lock of the database at `db`, creating its lock file if needed, and waits up
    /// to `wait` (on the calling thread) for another holder to let go.
    pub(crate) fn acquire(db: &Path, wait: Duration) -> Result<Self, SqliteStorageError> {
        let path = lock_path(db);
        let lock_error = |source| SqliteStorageError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        // A wait too long to add to the clock (such as `Duration::MAX`) never ends.
        let deadline = Instant::now().checked_add(wait);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock)
                    if deadline.is_none_or(|deadline| Instant::now() < deadline) =>
                {
                    thread::sleep(RETRY)
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(SqliteStorageError::InUse {
                        path: db.to_owned(),
                    })
                }
                Err(TryLockError::Error(source)) => return Err(lock_error(source)),
            }
        }
    }
}

/// `<database>-lock`, beside the database (as SQLite's own `-wal` and `-shm` files).
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = OsString::from(db.as_os_str());
    name.push("-lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use test_helper::TempDir;

    use super::*;

    #[test]
    fn a_locked_database_is_refused_until_its_holder_lets_go() {
        let dir = TempDir::new("db-lock");
        let db = dir.path().join("data.db");
        let held = DbLock::acquire(&db, Duration::ZERO).unwrap();
        assert!(lock_path(&db).exists());
        match DbLock::acquire(&db, Duration::from_millis(30)) {
            Err(SqliteStorageError::InUse { path }) => assert_eq!(path, db),
            other => panic!("expected InUse, got {other:?}"),
        }
        let waiting = thread::spawn({
            let db = db.clone();
            // However long the wait, up to one that cannot be added to the clock.
            move || DbLock::acquire(&db, Duration::MAX)
        });
        drop(held);
        waiting.join().unwrap().expect("the lock once released");
    }

    #[test]
    fn a_lock_file_that_cannot_be_created_is_a_lock_error() {
        let dir = TempDir::new("db-lock-missing");
        let db = dir.path().join("missing").join("data.db");
        match DbLock::acquire(&db, Duration::ZERO) {
            Err(SqliteStorageError::Lock { path, .. }) => assert_eq!(path, lock_path(&db)),
            other => panic!("expected a lock error, got {other:?}"),
        }
    }
}
