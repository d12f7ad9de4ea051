//! [`SqliteStorageOptions`] and [`Synchronous`]: how [`SqliteStorage::open_with`] opens a
//! database file.
//!
//! [`SqliteStorage::open_with`]: crate::SqliteStorage::open_with

use std::time::Duration;

/// SQLite's [`synchronous`](https://www.sqlite.org/pragma.html#pragma_synchronous) setting
/// for the connection that writes: how often a commit waits for the disk (`fsync`). The
/// database is always in [WAL mode](https://www.sqlite.org/wal.html); what follows holds for
/// WAL mode.
///
/// | setting              | process crash, `SIGKILL` | OS crash or power loss       | cost                            |
/// |----------------------|--------------------------|------------------------------|---------------------------------|
/// | [`Normal`] (default) | nothing lost             | the last commits may be lost | no fsync at commit              |
/// | [`Full`]             | nothing lost             | nothing acknowledged is lost | one fsync of the WAL per commit |
///
/// With either, a write that returned `Ok` survives the process dying: a commit is written to
/// the WAL file (the OS page cache) before the call returns. With either, the database is
/// not corrupted by a crash or power loss: SQLite documents WAL mode with `NORMAL` as safe
/// from corruption, and at worst recent commits roll back.
///
/// Both guarantees against power loss assume the OS and the drive honour `fsync` (a drive
/// that acknowledges a flush it only cached defeats them).
///
/// [`Normal`]: Synchronous::Normal
/// [`Full`]: Synchronous::Full
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = NORMAL`, the default. A commit is appended to the WAL but not fsynced;
    /// SQLite syncs the WAL only around checkpoints. A write that returned `Ok` can be lost
    /// (rolled back) by a power loss or an OS crash, never by the process crashing or being
    /// killed; the database stays consistent either way.
    #[default]
    Normal,
    /// `synchronous = FULL`. The WAL is also fsynced at every commit, before the write is
    /// acknowledged, so a write that returned `Ok` survives a power loss or an OS crash. The
    /// cost is one fsync per commit: writes queued together share one commit (group
    /// commit), so concurrent callers and bulk writes share that fsync, but a lone caller
    /// pays one per write.
    Full,
}

impl Synchronous {
    /// The value for `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Settings for [`SqliteStorage::open_with`](crate::SqliteStorage::open_with).
/// [`SqliteStorage::open`](crate::SqliteStorage::open) uses the defaults.
///
/// ```
/// use datacake_sqlite::{SqliteStorageOptions, Synchronous};
///
/// let options = SqliteStorageOptions::new().with_synchronous(Synchronous::Full);
/// assert_eq!(options.synchronous(), Synchronous::Full);
/// assert_eq!(SqliteStorageOptions::default().synchronous(), Synchronous::Normal);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SqliteStorageOptions {
    synchronous: Synchronous,
    lock_wait: Duration,
}

/// How long an open waits by default for another storage to close the database.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

impl Default for SqliteStorageOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}

impl SqliteStorageOptions {
    /// The defaults: [`Synchronous::Normal`], and a lock wait of [`DEFAULT_LOCK_WAIT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The `synchronous` setting of the connection that writes (default
    /// [`Synchronous::Normal`]); see [`Synchronous`] for what each setting loses on a power
    /// loss.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use datacake_sqlite::{SqliteStorage, SqliteStorageOptions, Synchronous};
    ///
    /// let dir = std::env::temp_dir().join(format!("datacake-sqlite-sync-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let options = SqliteStorageOptions::new().with_synchronous(Synchronous::Full);
    /// let storage = SqliteStorage::open_with(dir.join("data.db"), options).await?;
    /// # drop(storage);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The `synchronous` setting these options choose.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// How long an open waits for another storage to close the database (default
    /// [`DEFAULT_LOCK_WAIT`]) before it fails with
    /// [`SqliteStorageError::InUse`](crate::SqliteStorageError::InUse).
    ///
    /// One storage at a time writes a database file: an open takes the exclusive lock of
    /// `<database>-lock` and holds it until the storage's last clone is dropped and its last
    /// write committed. The wait covers a store reopened in the same process while the
    /// previous one still finishes; a second process on a database in use is refused after
    /// it. A killed process's lock is released by the operating system at once.
    /// `Duration::ZERO` gives up at once; `Duration::MAX` waits for as long as it takes.
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How long an open waits for another storage to close the database.
    pub fn lock_wait(&self) -> Duration {
        self.lock_wait
    }
}
