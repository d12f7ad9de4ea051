//! The durable directory's lock: one Raft instance at a time writes a directory's log, vote
//! and snapshot.
//!
//! Two instances on one directory (a second process started on it, or a restart in the same
//! process while the stopped instance still flushes) would each hold their own idea of the
//! log's tail and the vote, and interleave their writes: a node could vote twice in a term or
//! lose entries it acknowledged. The directory's `LOCK` file carries an exclusive advisory
//! lock (`flock` on Unix, `LockFileEx` on Windows) for as long as an instance may write
//! there: until openraft has stopped and the log's writer thread has committed its last
//! group. The operating system drops it with the process, so a killed node restarts at once.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::RaftError;

/// The lock file's name in the durable directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// How long a starting instance waits for the directory's previous instance to stop before
/// it gives up with [`RaftError::DirectoryInUse`].
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting instance tries the lock again.
const RETRY: Duration = Duration::from_millis(10);

/// Holds a durable directory's lock; dropping the last clone releases it.
#[derive(Debug, Clone)]
pub(crate) struct DirLock {
    _file: Arc<File>,
}

impl DirLock {
    /// Takes `dir`'s lock (creating the directory and its lock file if needed), waiting up to
    /// `wait` for another holder to let go.
    pub(crate) async fn acquire(dir: &Path, wait: Duration) -> Result<Self, RaftError> {
        let file = open(dir)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Self {
                        _file: Arc::new(file),
                    })
                }
                Err(fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RETRY).await;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(RaftError::DirectoryInUse {
                        dir: dir.to_path_buf(),
                    })
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(storage_error(&dir.join(LOCK_FILE), e))
                }
            }
        }
    }
}

fn open(dir: &Path) -> Result<File, RaftError> {
    fs::create_dir_all(dir).map_err(|e| storage_error(dir, e))?;
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| storage_error(&path, e))
}

fn storage_error(path: &Path, e: std::io::Error) -> RaftError {
    RaftError::storage(path.display().to_string(), e)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use test_helper::TempDir;

    use super::*;

    #[tokio::test]
    async fn a_locked_directory_is_refused_until_its_holder_lets_go() {
        let dir = TempDir::new("dir-lock");
        let held = DirLock::acquire(dir.path(), Duration::ZERO).await.unwrap();
        let clone = held.clone();
        match DirLock::acquire(dir.path(), Duration::from_millis(50)).await {
            Err(RaftError::DirectoryInUse { dir: refused }) => assert_eq!(refused, dir.path()),
            other => panic!("expected DirectoryInUse, got {other:?}"),
        }
        drop(held);
        // A clone still holds it.
        assert!(DirLock::acquire(dir.path(), Duration::ZERO).await.is_err());
        // A waiting instance gets it once the last clone is dropped.
        let waiting = tokio::spawn({
            let path = dir.path().to_path_buf();
            async move { DirLock::acquire(&path, Duration::from_secs(10)).await }
        });
        drop(clone);
        waiting.await.unwrap().expect("the lock once released");
    }
}
