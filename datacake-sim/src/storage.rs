//! The durable storage of a simulated node: an in-memory store kept outside the node's host,
//! so it survives a simulated crash and restart, that records the stamps the store gave each
//! write (for the checkers) and can be broken on purpose (to show the checkers catch it).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{BulkMutationError, Document, Key, Metadata, Storage};
use datacake_node::NodeId;
use parking_lot::Mutex;

/// The keyspace the workload writes.
pub const KEYSPACE: &str = "sim";

/// The stamps writes got, as the storages saw them.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Each put's write id (its 8-byte value) and stamp.
    puts: Mutex<HashMap<u64, HLCTimestamp>>,
    /// Every tombstone stamp any replica stored, per key (each is a delete someone issued).
    deletes: Mutex<HashMap<Key, BTreeSet<HLCTimestamp>>>,
}

impl Recorder {
    /// The stamp of the put that wrote `write_id`, if any replica stored it.
    pub fn put_stamp(&self, write_id: u64) -> Option<HLCTimestamp> {
        self.puts.lock().get(&write_id).copied()
    }

    /// The newest tombstone of `key` that `node` stamped (issued), as stored anywhere.
    pub fn own_delete(&self, node: NodeId, key: Key) -> Option<HLCTimestamp> {
        let deletes = self.deletes.lock();
        let stamps = deletes.get(&key)?;
        stamps.iter().rev().find(|s| s.node() == node).copied()
    }

    /// Whether a replica turned the version of `key` stamped `stamp` into a tombstone of the
    /// same stamp: what forgetting an obsolete copy does (a delete always has a stamp of
    /// its own).
    pub fn forgotten(&self, key: Key, stamp: HLCTimestamp) -> bool {
        let deletes = self.deletes.lock();
        deletes
            .get(&key)
            .is_some_and(|stamps| stamps.contains(&stamp))
    }

    /// Whether some delete of `key` was stamped later than `stamp`.
    pub fn deleted_after(&self, key: Key, stamp: HLCTimestamp) -> bool {
        let deletes = self.deletes.lock();
        deletes
            .get(&key)
            .and_then(|stamps| stamps.last())
            .is_some_and(|newest| *newest > stamp)
    }

    fn saw_put(&self, document: &Document) {
        if let Ok(bytes) = <[u8; 8]>::try_from(document.data.as_ref()) {
            self.puts
                .lock()
                .insert(u64::from_le_bytes(bytes), document.last_updated);
        }
    }

    fn saw_delete(&self, key: Key, stamp: HLCTimestamp) {
        self.deletes.lock().entry(key).or_default().insert(stamp);
    }
}

/// A node's storage: see the module docs.
#[derive(Debug, Clone)]
pub struct SimStorage {
    inner: MemStore,
    recorder: Arc<Recorder>,
    skip_deletes: bool,
}

impl SimStorage {
    /// A node's storage, reporting to `recorder`.
    pub fn new(recorder: Arc<Recorder>) -> Self {
        Self {
            inner: MemStore::default(),
            recorder,
            skip_deletes: false,
        }
    }

    /// A broken storage that acknowledges tombstones of the workload's keyspace without
    /// storing them (a replica that does not apply deletes). Only for showing that the
    /// checkers catch a broken replica.
    pub fn skipping_deletes(mut self) -> Self {
        self.skip_deletes = true;
        self
    }

    fn skips(&self, keyspace: &str) -> bool {
        self.skip_deletes && keyspace == KEYSPACE
    }
}

#[async_trait]
impl Storage for SimStorage {
    type Error = <MemStore as Storage>::Error;

    async fn get_keyspace_list(&self) -> Result<Vec<String>, Self::Error> {
        self.inner.get_keyspace_list().await
    }

    async fn iter_metadata(&self, keyspace: &str) -> Result<Vec<Metadata>, Self::Error> {
        self.inner.iter_metadata(keyspace).await
    }

    async fn remove_tombstones(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.inner.remove_tombstones(keyspace, keys).await
    }

    async fn put(&self, keyspace: &str, document: Document) -> Result<(), Self::Error> {
        if keyspace == KEYSPACE {
            self.recorder.saw_put(&document);
        }
        self.inner.put(keyspace, document).await
    }

    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        if keyspace == KEYSPACE {
            documents.iter().for_each(|d| self.recorder.saw_put(d));
        }
        self.inner.multi_put(keyspace, documents).await
    }

    async fn mark_as_tombstone(
        &self,
        keyspace: &str,
        key: Key,
        timestamp: HLCTimestamp,
    ) -> Result<(), Self::Error> {
        if keyspace == KEYSPACE {
            self.recorder.saw_delete(key, timestamp);
        }
        if self.skips(keyspace) {
            return Ok(());
        }
        self.inner.mark_as_tombstone(keyspace, key, timestamp).await
    }

    async fn mark_many_as_tombstone(
        &self,
        keyspace: &str,
        keys: Vec<(Key, HLCTimestamp)>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        if keyspace == KEYSPACE {
            for (key, stamp) in &keys {
                self.recorder.saw_delete(*key, *stamp);
            }
        }
        if self.skips(keyspace) {
            return Ok(());
        }
        self.inner.mark_many_as_tombstone(keyspace, keys).await
    }

    async fn get(&self, keyspace: &str, key: Key) -> Result<Option<Document>, Self::Error> {
        self.inner.get(keyspace, key).await
    }

    async fn multi_get(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<Vec<Document>, Self::Error> {
        self.inner.multi_get(keyspace, keys).await
    }
}
