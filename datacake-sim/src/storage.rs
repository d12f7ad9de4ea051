//! The durable storage of a simulated node: an in-memory store kept outside the node's host,
//! so it survives a simulated crash and restart, that records the stamps the store gave each
//! write (for the checkers) and can be broken on purpose (to show the checkers catch it).
//! (Disk faults wrap it in the store's `FaultyStorage`: a refused write never reaches it.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{BulkMutationError, Document, Key, Metadata, Storage};
use datacake_node::NodeId;
use parking_lot::Mutex;

/// The keyspace the workload writes.
pub const KEYSPACE: &str = "sim";

/// The stamps writes got, and the nodes whose storages stored them.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Each put's write id (its 8-byte value), stamp and holders.
    puts: Mutex<HashMap<u64, (HLCTimestamp, BTreeSet<NodeId>)>>,
    /// Every tombstone stamp any replica stored, per key (each is a delete someone issued),
    /// with its holders.
    deletes: Mutex<HashMap<Key, BTreeMap<HLCTimestamp, BTreeSet<NodeId>>>>,
}

impl Recorder {
    /// The stamp of the put that wrote `write_id`, if any replica stored it.
    pub fn put_stamp(&self, write_id: u64) -> Option<HLCTimestamp> {
        self.puts.lock().get(&write_id).map(|(stamp, _)| *stamp)
    }

    /// The nodes whose storages ever stored the put that wrote `write_id`.
    pub fn put_holders(&self, write_id: u64) -> BTreeSet<NodeId> {
        let puts = self.puts.lock();
        puts.get(&write_id)
            .map(|(_, holders)| holders.clone())
            .unwrap_or_default()
    }

    /// The nodes whose storages ever stored the tombstone of `key` stamped `stamp`.
    pub fn delete_holders(&self, key: Key, stamp: HLCTimestamp) -> BTreeSet<NodeId> {
        let deletes = self.deletes.lock();
        deletes
            .get(&key)
            .and_then(|stamps| stamps.get(&stamp))
            .cloned()
            .unwrap_or_default()
    }

    /// The newest tombstone of `key` that `node` stamped (issued), as stored anywhere.
    pub fn own_delete(&self, node: NodeId, key: Key) -> Option<HLCTimestamp> {
        let deletes = self.deletes.lock();
        let stamps = deletes.get(&key)?;
        stamps.keys().rev().find(|s| s.node() == node).copied()
    }

    /// Whether a replica turned the version of `key` stamped `stamp` into a tombstone of the
    /// same stamp: what forgetting an obsolete copy does (a delete always has a stamp of
    /// its own).
    pub fn forgotten(&self, key: Key, stamp: HLCTimestamp) -> bool {
        let deletes = self.deletes.lock();
        deletes
            .get(&key)
            .is_some_and(|stamps| stamps.contains_key(&stamp))
    }

    /// Whether some delete of `key` was stamped later than `stamp`.
    pub fn deleted_after(&self, key: Key, stamp: HLCTimestamp) -> bool {
        let deletes = self.deletes.lock();
        deletes
            .get(&key)
            .and_then(|stamps| stamps.last_key_value())
            .is_some_and(|(newest, _)| *newest > stamp)
    }

    pub(crate) fn saw_put(&self, node: NodeId, document: &Document) {
        if let Ok(bytes) = <[u8; 8]>::try_from(document.data.as_ref()) {
            let mut puts = self.puts.lock();
            let (_, holders) = puts
                .entry(u64::from_le_bytes(bytes))
                .or_insert_with(|| (document.last_updated, BTreeSet::new()));
            holders.insert(node);
        }
    }

    pub(crate) fn saw_delete(&self, node: NodeId, key: Key, stamp: HLCTimestamp) {
        let mut deletes = self.deletes.lock();
        deletes
            .entry(key)
            .or_default()
            .entry(stamp)
            .or_default()
            .insert(node);
    }
}

/// A node's storage: see the module docs.
#[derive(Debug, Clone)]
pub struct SimStorage {
    inner: MemStore,
    /// The node this storage belongs to.
    node: NodeId,
    recorder: Arc<Recorder>,
    skip_deletes: bool,
}

impl SimStorage {
    /// Node `node`'s storage, reporting to `recorder`.
    pub fn new(node: NodeId, recorder: Arc<Recorder>) -> Self {
        Self {
            inner: MemStore::default(),
            node,
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
            self.recorder.saw_put(self.node, &document);
        }
        self.inner.put(keyspace, document).await
    }

    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        if keyspace == KEYSPACE {
            documents
                .iter()
                .for_each(|d| self.recorder.saw_put(self.node, d));
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
            self.recorder.saw_delete(self.node, key, timestamp);
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
                self.recorder.saw_delete(self.node, *key, *stamp);
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
