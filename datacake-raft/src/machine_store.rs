//! The state machine's store, as openraft sees it ([`StateMachineStore`], the counterpart of
//! the log stores beside it): applies committed entries to the user's
//! [`StateMachine`](crate::StateMachine), builds and installs snapshots, and (with a durable
//! store) keeps the latest snapshot on disk so a restarted node can rebuild its state after
//! the log before it was purged. The user-facing trait and its type-erased form are in
//! [`machine`](crate::machine); this file is openraft's side of it, kept apart because it
//! deals in openraft's types, snapshot files and blocking threads, none of which a reader of
//! the trait needs.
//!
//! Snapshot work that can take long — the user's `snapshot` and `restore`, writing and
//! fsyncing the snapshot file — runs on tokio's blocking threads, never on the async runtime.
//! openraft builds a snapshot in a task of its own, beside `apply`; the snapshot holds the
//! applied state (so its bytes and its last log id agree) and `apply` waits for it
//! asynchronously, without holding up the runtime's thread.

// openraft's own error types (`StorageError`, `ConfigError`) are large; they are what its
// traits return, so helpers return them unboxed too (as openraft itself does).
#![allow(clippy::result_large_err)]

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use tracing::warn;

use crate::codec;
use crate::error::RaftError;
use crate::format;
use crate::machine::SharedMachine;
use crate::types::{
    Entry, LogId, Reply, SnapshotMeta, StorageError, StorageResult, StoredMembership, TypeConfig,
};

/// The snapshot file's name inside the durable directory.
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// A snapshot as kept in memory (and on disk): its metadata and the user's bytes.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// What the adaptor tracks besides the user's state.
#[derive(Debug, Default)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshot: Option<StoredSnapshot>,
}

/// Adapts the user's state machine to openraft's [`RaftStateMachine`]. Cheap to clone (the
/// snapshot builder is a clone).
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    machine: SharedMachine,
    /// An async lock: `apply` may wait on it for as long as the user's `snapshot` runs.
    applied: Arc<tokio::sync::Mutex<Applied>>,
    dir: Option<PathBuf>,
    snapshot_seq: Arc<AtomicU64>,
    /// The largest snapshot peers accept; a larger one is built, but with a warning.
    size_limit: u64,
    /// The last log id of the snapshot in the file, held while the file is written: a build
    /// and an install (openraft runs them apart) write one at a time, and a build captured
    /// before an install finished never replaces the newer file with its older state.
    persisted: SnapshotOnDisk,
}

/// The last log id of the snapshot in the state machine's file (shared with the durable log,
/// which deletes purged rows only as far as it reaches).
#[derive(Debug, Clone, Default)]
pub(crate) struct SnapshotOnDisk(Arc<parking_lot::Mutex<Option<LogId>>>);

impl SnapshotOnDisk {
    /// What the file covers now.
    pub(crate) fn covered(&self) -> Option<LogId> {
        *self.0.lock()
    }

    #[cfg(test)]
    pub(crate) fn set(&self, covered: Option<LogId>) {
        *self.0.lock() = covered;
    }
}

impl StateMachineStore {
    /// An adaptor over `machine`; with `dir`, snapshots are persisted there and the latest one
    /// is restored now. A snapshot file of another format version is refused.
    pub(crate) fn open(machine: SharedMachine, dir: Option<PathBuf>) -> Result<Self, RaftError> {
        let mut applied = Applied::default();
        if let Some(dir) = &dir {
            fs::create_dir_all(dir)
                .map_err(|e| RaftError::storage(dir.display().to_string(), e))?;
            if let Some(snapshot) = read_snapshot(&dir.join(SNAPSHOT_FILE))? {
                machine.write().restore(&snapshot.data);
                applied.last_applied = snapshot.meta.last_log_id;
                applied.last_membership = snapshot.meta.last_membership.clone();
                applied.snapshot = Some(snapshot);
            }
        }
        let persisted = applied.snapshot.as_ref().and_then(|s| s.meta.last_log_id);
        Ok(Self {
            machine,
            applied: Arc::new(tokio::sync::Mutex::new(applied)),
            persisted: SnapshotOnDisk(Arc::new(parking_lot::Mutex::new(persisted))),
            dir,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            size_limit: u64::MAX,
        })
    }

    /// [`open`](Self::open) on a blocking thread: reading the snapshot file and the user's
    /// `restore` may take long.
    pub(crate) async fn open_off_runtime(
        machine: SharedMachine,
        dir: Option<PathBuf>,
    ) -> Result<Self, RaftError> {
        off_runtime(
            move || Self::open(machine, dir),
            |e| {
                RaftError::storage(
                    "opening the state machine",
                    std::io::Error::other(format!("cancelled: {e}")),
                )
            },
        )
        .await
    }

    /// The snapshot the file holds, kept up to date as snapshots are written.
    pub(crate) fn snapshot_on_disk(&self) -> SnapshotOnDisk {
        self.persisted.clone()
    }

    /// Warn when a built snapshot is larger than `limit` bytes (what peers accept).
    pub(crate) fn with_size_limit(mut self, limit: u64) -> Self {
        self.size_limit = limit;
        self
    }

    /// Builds a snapshot of the current state and persists it (blocking).
    fn build_blocking(&self) -> StorageResult<StoredSnapshot> {
        let snapshot = {
            let mut applied = self.applied.blocking_lock();
            let data = self.machine.read().snapshot();
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match applied.last_applied {
                Some(log_id) => format!("{}-{}-{seq}", log_id.leader_id, log_id.index),
                None => format!("none-{seq}"),
            };
            let snapshot = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.last_membership.clone(),
                    snapshot_id,
                },
                data,
            };
            applied.snapshot = Some(snapshot.clone());
            snapshot
        };
        let size = u64::try_from(snapshot.data.len()).unwrap_or(u64::MAX);
        if size > self.size_limit {
            warn!(
                size,
                limit = self.size_limit,
                snapshot_id = %snapshot.meta.snapshot_id,
                "snapshot larger than max_snapshot_size: peers will refuse it"
            );
        }
        self.persist(&snapshot)?;
        Ok(snapshot)
    }

    /// Persists a received snapshot and restores the state from it (blocking).
    fn install_blocking(&self, snapshot: StoredSnapshot) -> StorageResult<()> {
        self.persist(&snapshot)?;
        let mut applied = self.applied.blocking_lock();
        self.machine.write().restore(&snapshot.data);
        applied.last_applied = snapshot.meta.last_log_id;
        applied.last_membership = snapshot.meta.last_membership.clone();
        applied.snapshot = Some(snapshot);
        Ok(())
    }

    /// Writes `snapshot` to the file unless the file already holds a newer one.
    fn persist(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut persisted = self.persisted.0.lock();
        if *persisted > snapshot.meta.last_log_id {
            return Ok(());
        }
        write_snapshot(dir, snapshot).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                &e,
            ))
        })?;
        *persisted = snapshot.meta.last_log_id;
        Ok(())
    }
}

/// Runs `work` on a blocking thread. A panic in it (the user's `snapshot` or `restore`)
/// resumes here, as if it had run inline; if the task is cancelled (the runtime shuts down),
/// `cancelled` makes the error from the reason.
async fn off_runtime<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    cancelled: impl FnOnce(String) -> E,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(cancelled(e.to_string())),
    }
}

/// [`off_runtime`] for snapshot work `verb` ("building", "installing").
async fn blocking<T: Send + 'static>(
    verb: &'static str,
    work: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    off_runtime(work, |e| {
        StorageError::from(StorageIOError::write_snapshot(
            None,
            &std::io::Error::other(format!("{verb} a snapshot was cancelled: {e}")),
        ))
    })
    .await
}

/// Writes the snapshot to a temporary file, fsyncs it and renames it into place. The file: the
/// format header, the meta's length (`u64`, little endian), the meta (postcard), the user's
/// bytes.
fn write_snapshot(dir: &Path, snapshot: &StoredSnapshot) -> std::io::Result<()> {
    let meta = codec::encode(&snapshot.meta).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&format::snapshot_header())?;
    file.write_all(&(meta.len() as u64).to_le_bytes())?;
    file.write_all(&meta)?;
    file.write_all(&snapshot.data)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot file at `path`, if there is one.
fn read_snapshot(path: &Path) -> Result<Option<StoredSnapshot>, RaftError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| {
        RaftError::storage(path.display().to_string(), source)
    };
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e.into())),
    };
    let corrupt = || failed("corrupt snapshot file".into());
    let body = format::strip_snapshot_header(path, &bytes)?;
    let (len_bytes, rest) = body.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let meta_len = usize::try_from(u64::from_le_bytes(*len_bytes)).map_err(|_| corrupt())?;
    let meta = rest.get(..meta_len).ok_or_else(corrupt)?;
    let meta = codec::decode(meta)
        .map_err(|e| RaftError::storage(format!("{}: corrupt snapshot meta", path.display()), e))?;
    Ok(Some(StoredSnapshot {
        meta,
        data: rest[meta_len..].to_vec(),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let store = self.clone();
        let snapshot = blocking("building", move || store.build_blocking()).await?;
        Ok(Snapshot {
            meta: snapshot.meta,
            snapshot: Box::new(Cursor::new(snapshot.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let applied = self.applied.lock().await;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Reply>>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.lock().await;
        let mut machine = self.machine.write();
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => batch
                    .0
                    .into_iter()
                    .map(|command| machine.apply(command))
                    .collect(),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let snapshot = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let store = self.clone();
        blocking("installing", move || store.install_blocking(snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let applied = self.applied.lock().await;
        Ok(applied.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::{Cursor, Read};
    use std::sync::mpsc;
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
    use parking_lot::Mutex;

    use super::{StateMachineStore, SNAPSHOT_FILE};
    use crate::conformance::Nothing;
    use crate::machine::share;
    use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership};
    use crate::StateMachine;

    /// A task that only reports, through the sender, that it ran.
    type Report = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Runs `op` on a single-threaded runtime in a thread of its own. `op` gets a [`Report`]
    /// to join with what it tests (`futures::join!` polls its first future first): the report
    /// can only run if that does not block the runtime's thread. Waits a few seconds for the
    /// report, then calls `unblock` (so a blocked `op` can finish) and joins the thread.
    /// Returns whether the report ran.
    fn report_runs_beside<F, Fut>(op: F, unblock: impl FnOnce()) -> bool
    where
        F: FnOnce(Report) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (ran_tx, ran_rx) = mpsc::channel();
        let runtime = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime builds");
            runtime.block_on(op(Box::pin(async move {
                let _ = ran_tx.send(());
            })));
        });
        let ran = ran_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        unblock();
        runtime.join().expect("runtime thread finishes");
        ran
    }

    /// Runs `op` while the snapshot's temporary file is a FIFO that nobody reads yet, so
    /// opening it for writing blocks; panics if a task beside `op` could not run meanwhile
    /// (`op` did its file I/O on the runtime's thread).
    fn assert_runtime_stays_free<F, Fut>(name: &str, op: F)
    where
        F: FnOnce(StateMachineStore) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let dir = test_helper::TempDir::new(name);
        let store = StateMachineStore::open(share(Nothing), Some(dir.path().to_path_buf()))
            .expect("store opens");
        let fifo = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());

        let ran = report_runs_beside(
            move |report| async move {
                futures::join!(op(store), report);
            },
            // Read the FIFO so the write finishes (fsync on a FIFO fails; that is fine here).
            || {
                let mut written = Vec::new();
                std::fs::File::open(&fifo)
                    .and_then(|mut f| f.read_to_end(&mut written))
                    .expect("fifo read");
            },
        );
        assert!(
            ran,
            "{name}: another task could not run while the snapshot file was written"
        );
    }

    /// Which of a [`Gate`]'s methods holds up its caller.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Held {
        Snapshot,
        Restore,
    }

    /// A state machine whose `snapshot` (or `restore`) reports that it started, then waits for
    /// a release.
    struct Gate {
        held: Held,
        started: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Gate {
        /// The gate, the receiver of its start, and the sender of its release.
        fn new(held: Held) -> (Self, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (started_tx, started_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel();
            let gate = Gate {
                held,
                started: Mutex::new(started_tx),
                release: Mutex::new(release_rx),
            };
            (gate, started_rx, release_tx)
        }

        fn hold(&self, at: Held) {
            if self.held == at {
                let _ = self.started.lock().send(());
                let _ = self.release.lock().recv();
            }
        }
    }

    impl StateMachine for Gate {
        type Command = ();
        type Response = ();
        type Query = ();
        type Answer = ();

        fn apply(&mut self, _command: ()) {}
        fn read(&self, _query: ()) {}
        fn snapshot(&self) -> Vec<u8> {
            self.hold(Held::Snapshot);
            Vec::new()
        }
        fn restore(&mut self, _snapshot: &[u8]) {
            self.hold(Held::Restore);
        }
    }

    /// openraft builds snapshots beside `apply`: while the user's `snapshot` runs, `apply`
    /// waits, and another task on a single-threaded runtime still runs meanwhile. (With a
    /// blocking lock, `apply` held up the runtime's only thread until the snapshot was done.)
    #[test]
    fn apply_waits_for_a_snapshot_in_progress_without_holding_up_the_runtime() {
        let (gate, started_rx, release_tx) = Gate::new(Held::Snapshot);
        let store = StateMachineStore::open(share(gate), None).expect("store opens");
        let ran = report_runs_beside(
            |report| async move {
                let mut builder = store.clone();
                let building = tokio::spawn(async move { builder.build_snapshot().await });
                tokio::task::spawn_blocking(move || started_rx.recv())
                    .await
                    .expect("waiting task")
                    .expect("the snapshot starts");
                let mut applier = store;
                let entry = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                    payload: EntryPayload::Blank,
                };
                let (applied, ()) = futures::join!(applier.apply(vec![entry]), report);
                applied.expect("applied");
                building.await.expect("build task").expect("snapshot built");
            },
            || release_tx.send(()).expect("the snapshot waits"),
        );
        assert!(
            ran,
            "another task could not run while apply waited for the snapshot"
        );
    }

    /// openraft builds a snapshot in a task of its own while the state machine installs one
    /// received from the leader. A build that captured the state before the install must
    /// not write its older snapshot over the installed one: a restart would then find the
    /// old state beside a log purged past it.
    #[test]
    fn a_build_captured_before_an_install_does_not_overwrite_its_snapshot() {
        let dir = test_helper::TempDir::new("build-beside-install");
        let (gate, started_rx, release_tx) = Gate::new(Held::Snapshot);
        let store = StateMachineStore::open(share(gate), Some(dir.path().to_path_buf()))
            .expect("store opens");
        let installed = LogId::new(CommittedLeaderId::new(3, 1), 500);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime builds");
        runtime.block_on(async {
            let mut builder = store.clone();
            let building = tokio::spawn(async move { builder.build_snapshot().await });
            tokio::task::spawn_blocking(move || started_rx.recv())
                .await
                .expect("waiting task")
                .expect("the build starts");
            let mut installer = store.clone();
            let installing = tokio::spawn(async move {
                let meta = SnapshotMeta {
                    last_log_id: Some(installed),
                    last_membership: StoredMembership::default(),
                    snapshot_id: "from-the-leader".to_string(),
                };
                installer
                    .install_snapshot(&meta, Box::new(Cursor::new(b"new".to_vec())))
                    .await
            });
            // The install writes its file first, then waits for the state the build holds.
            let file = dir.join(SNAPSHOT_FILE);
            test_helper::wait_for(
                "the installed snapshot's file",
                Duration::from_secs(10),
                || {
                    let file = file.clone();
                    async move {
                        super::read_snapshot(&file)
                            .ok()
                            .flatten()
                            .is_some_and(|s| s.meta.last_log_id == Some(installed))
                    }
                },
            )
            .await;
            release_tx.send(()).expect("the build waits");
            building.await.expect("build task").expect("built");
            installing.await.expect("install task").expect("installed");
        });
        drop(store);
        let reopened = StateMachineStore::open(share(Nothing), Some(dir.path().to_path_buf()))
            .expect("store reopens");
        let applied = runtime.block_on(reopened.applied.lock()).last_applied;
        assert_eq!(
            applied,
            Some(installed),
            "the file holds the newest snapshot"
        );
    }

    /// An install holds the machine while the user's `restore` runs; a local read meanwhile
    /// waits without holding up the runtime's thread. (It read in place before, so another
    /// task on a single-threaded runtime could not run until the restore was done.)
    #[test]
    fn a_read_during_a_restore_does_not_hold_up_the_runtime() {
        let (gate, started_rx, release_tx) = Gate::new(Held::Restore);
        let machine = share(gate);
        let store = StateMachineStore::open(machine.clone(), None).expect("store opens");
        let ran = report_runs_beside(
            move |report| async move {
                let mut installer = store;
                let installing = tokio::spawn(async move {
                    let meta = SnapshotMeta {
                        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
                        last_membership: StoredMembership::default(),
                        snapshot_id: "slow".to_string(),
                    };
                    installer
                        .install_snapshot(&meta, Box::new(Cursor::new(Vec::new())))
                        .await
                });
                tokio::task::spawn_blocking(move || started_rx.recv())
                    .await
                    .expect("waiting task")
                    .expect("the restore starts");
                let query = crate::codec::archive(&()).expect("archived");
                let (answer, ()) = futures::join!(crate::machine::query(&machine, query), report);
                answer.expect("answered");
                installing.await.expect("install task").expect("installed");
            },
            || release_tx.send(()).expect("the restore waits"),
        );
        assert!(
            ran,
            "another task could not run while a read waited for the restore"
        );
    }

    #[test]
    fn building_a_snapshot_does_its_file_io_off_the_runtime() {
        assert_runtime_stays_free("build-off-runtime", |mut store| async move {
            let _ = store.build_snapshot().await;
        });
    }

    #[test]
    fn installing_a_snapshot_does_its_file_io_off_the_runtime() {
        assert_runtime_stays_free("install-off-runtime", |mut store| async move {
            let meta = SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "received".to_string(),
            };
            let _ = store
                .install_snapshot(&meta, Box::new(Cursor::new(Vec::new())))
                .await;
        });
    }
}
