//! The openraft state-machine adaptor: applies committed entries to the user's
//! [`StateMachine`](crate::StateMachine), builds and installs snapshots, and (with a durable
//! store) keeps the latest snapshot on disk so a restarted node can rebuild its state after
//! the log before it was purged.

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
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::machine::SharedMachine;
use crate::types::{
    Entry, LogId, Reply, SnapshotMeta, StorageError, StorageResult, StoredMembership, TypeConfig,
};

/// The snapshot file's name inside the durable directory.
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// A snapshot as kept in memory (and on disk): its metadata and the user's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    applied: Arc<Mutex<Applied>>,
    dir: Option<PathBuf>,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// An adaptor over `machine`; with `dir`, snapshots are persisted there and the latest one
    /// is restored now.
    pub(crate) fn open(machine: SharedMachine, dir: Option<PathBuf>) -> std::io::Result<Self> {
        let mut applied = Applied::default();
        if let Some(dir) = &dir {
            fs::create_dir_all(dir)?;
            if let Some(snapshot) = read_snapshot(&dir.join(SNAPSHOT_FILE))? {
                machine.write().restore(&snapshot.data);
                applied.last_applied = snapshot.meta.last_log_id;
                applied.last_membership = snapshot.meta.last_membership.clone();
                applied.snapshot = Some(snapshot);
            }
        }
        Ok(Self {
            machine,
            applied: Arc::new(Mutex::new(applied)),
            dir,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    fn persist(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        write_snapshot(dir, snapshot).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                &e,
            ))
        })
    }
}

/// Writes the snapshot to a temporary file, fsyncs it and renames it into place.
fn write_snapshot(dir: &Path, snapshot: &StoredSnapshot) -> std::io::Result<()> {
    let meta = serde_json::to_vec(&snapshot.meta)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&(meta.len() as u64).to_le_bytes())?;
    file.write_all(&meta)?;
    file.write_all(&snapshot.data)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    fs::File::open(dir)?.sync_all()
}

fn read_snapshot(path: &Path) -> std::io::Result<Option<StoredSnapshot>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let corrupt = || std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt snapshot file");
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .ok_or_else(corrupt)?
        .try_into()
        .map_err(|_| corrupt())?;
    let meta_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| corrupt())?;
    let meta_end = 8usize.checked_add(meta_len).ok_or_else(corrupt)?;
    let meta = serde_json::from_slice(bytes.get(8..meta_end).ok_or_else(corrupt)?)?;
    Ok(Some(StoredSnapshot {
        meta,
        data: bytes[meta_end..].to_vec(),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let snapshot = {
            let mut applied = self.applied.lock();
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
        self.persist(&snapshot)?;
        Ok(Snapshot {
            meta: snapshot.meta,
            snapshot: Box::new(Cursor::new(snapshot.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.lock();
        let mut machine = self.machine.write();
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Ok(String::new()),
                EntryPayload::Normal(command) => machine.apply_json(&command.0),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(String::new())
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
        self.persist(&snapshot)?;
        let mut applied = self.applied.lock();
        self.machine.write().restore(&snapshot.data);
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.snapshot = Some(snapshot);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let applied = self.applied.lock();
        Ok(applied.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
