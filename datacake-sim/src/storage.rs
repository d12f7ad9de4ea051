//! The durable storage of a simulated node: an in-memory store kept outside the node's host,
//! so it survives a simulated crash and restart, that records the stamps the store gave each
//! write (for the checkers) and can be broken on purpose (to show the checkers catch it).
//! (Disk faults wrap it in the store's `FaultyStorage`: a refused write never reaches it.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{
    BulkMutationError, Document, Key, Metadata, Storage, PURGE_WATERMARK_KEYSPACE,
};
use datacake_node::NodeId;
use parking_lot::Mutex;

/// The keyspace the workload writes.
pub const KEYSPACE: &str = "sim";

/// The stamps writes got, the nodes whose storages stored them, and when.
///
/// "When" is a point of the run's order ([`Recorder::tick`]): the workload takes its
/// operations' invocations and returns from the same counter, so the checkers can tell
/// whether a tombstone was stored before a read returned. The simulation runs every host on
/// one thread, so the order is the true real-time order.
#[derive(Debug, Default)]
pub struct Recorder {
    clock: AtomicU64,
    /// Each put's write id (its 8-byte value), key, stamp and holders.
    puts: Mutex<HashMap<u64, Put>>,
    /// Every tombstone any replica stored, per key and stamp. Most are deletes someone
    /// issued; one that carries a put's own stamp is a copy a replica forgot as obsolete
    /// (the store's `forget_obsolete` turns the copy into a tombstone of its stamp).
    tombstones: Mutex<HashMap<Key, BTreeMap<HLCTimestamp, Tombstone>>>,
    /// The highest purge watermark of the workload's keyspace each node's storage stored. A
    /// node refuses puts at or below it of keys it holds nothing for, and acknowledges deletes
    /// there without storing them: the key is absent, and stays so against older puts.
    watermarks: Mutex<HashMap<NodeId, HLCTimestamp>>,
}

/// What the storages stored of one put.
#[derive(Debug)]
struct Put {
    key: Key,
    stamp: HLCTimestamp,
    holders: BTreeSet<NodeId>,
}

/// What the storages stored of one tombstone.
#[derive(Debug)]
struct Tombstone {
    holders: BTreeSet<NodeId>,
    /// When the first replica stored it.
    first_stored: u64,
}

impl Recorder {
    /// The next point of the run's order.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// The stamp of the put that wrote `write_id`, if any replica stored it.
    pub fn put_stamp(&self, write_id: u64) -> Option<HLCTimestamp> {
        self.puts.lock().get(&write_id).map(|put| put.stamp)
    }

    /// The nodes whose storages ever stored the put that wrote `write_id`.
    pub fn put_holders(&self, write_id: u64) -> BTreeSet<NodeId> {
        let puts = self.puts.lock();
        puts.get(&write_id)
            .map(|put| put.holders.clone())
            .unwrap_or_default()
    }

    /// The nodes that ever held the delete of `key` stamped `stamp`: those whose storages
    /// stored its tombstone, and those whose purge watermark reached it (which acknowledge it
    /// without a tombstone when they hold nothing of `key`).
    pub fn delete_holders(&self, key: Key, stamp: HLCTimestamp) -> BTreeSet<NodeId> {
        let mut holders = self.past_watermark(stamp);
        let tombstones = self.tombstones.lock();
        if let Some(tombstone) = tombstones.get(&key).and_then(|stamps| stamps.get(&stamp)) {
            holders.extend(tombstone.holders.iter().copied());
        }
        holders
    }

    /// The nodes whose storages stored a purge watermark at or above `stamp`.
    fn past_watermark(&self, stamp: HLCTimestamp) -> BTreeSet<NodeId> {
        let watermarks = self.watermarks.lock();
        watermarks
            .iter()
            .filter(|(_, mark)| **mark >= stamp)
            .map(|(node, _)| *node)
            .collect()
    }

    /// The newest delete of `key` that `node` stamped (issued), as stored anywhere. (Not a
    /// copy of `node`'s put that a replica forgot: that tombstone carries the put's stamp.)
    pub fn own_delete(&self, node: NodeId, key: Key) -> Option<HLCTimestamp> {
        let puts = self.puts.lock();
        let tombstones = self.tombstones.lock();
        let stamps = tombstones.get(&key)?;
        stamps
            .keys()
            .rev()
            .find(|s| s.node() == node && !is_put_stamp(&puts, key, **s))
            .copied()
    }

    /// Whether a replica turned the version of `key` stamped `stamp` into a tombstone of the
    /// same stamp: what forgetting an obsolete copy does (a delete always has a stamp of
    /// its own).
    pub fn forgotten(&self, key: Key, stamp: HLCTimestamp) -> bool {
        let tombstones = self.tombstones.lock();
        tombstones
            .get(&key)
            .is_some_and(|stamps| stamps.contains_key(&stamp))
    }

    /// The deletes of `key` stamped later than `stamp`, each with when a replica first stored
    /// it: every such tombstone but the copies replicas forgot (which carry a put's stamp).
    pub fn deletes_after(&self, key: Key, stamp: HLCTimestamp) -> Vec<(HLCTimestamp, u64)> {
        let puts = self.puts.lock();
        let tombstones = self.tombstones.lock();
        let Some(stamps) = tombstones.get(&key) else {
            return Vec::new();
        };
        stamps
            .range((Bound::Excluded(stamp), Bound::Unbounded))
            .filter(|(s, _)| !is_put_stamp(&puts, key, **s))
            .map(|(s, tombstone)| (*s, tombstone.first_stored))
            .collect()
    }

    /// How many nodes have stored the write of `key` stamped `stamp` or a later version of
    /// `key` (a put or a tombstone), counting for a delete (`tombstone`) also the nodes whose
    /// purge watermark reached it: what a replica's acknowledgement of the write attests.
    pub fn copies(&self, key: Key, stamp: HLCTimestamp, tombstone: bool) -> usize {
        let mut nodes = if tombstone {
            self.past_watermark(stamp)
        } else {
            BTreeSet::new()
        };
        let puts = self.puts.lock();
        let tombstones = self.tombstones.lock();
        nodes.extend(
            puts.values()
                .filter(|put| put.key == key && put.stamp >= stamp)
                .flat_map(|put| put.holders.iter().copied()),
        );
        if let Some(stamps) = tombstones.get(&key) {
            for (_, tombstone) in stamps.range(stamp..) {
                nodes.extend(tombstone.holders.iter().copied());
            }
        }
        nodes.len()
    }

    pub(crate) fn saw_watermark(&self, node: NodeId, document: &Document) {
        let name = document.data.get(16..);
        if name == Some(KEYSPACE.as_bytes()) {
            let mut watermarks = self.watermarks.lock();
            let mark = watermarks.entry(node).or_insert(document.last_updated);
            *mark = (*mark).max(document.last_updated);
        }
    }

    pub(crate) fn saw_put(&self, node: NodeId, document: &Document) {
        if let Ok(bytes) = <[u8; 8]>::try_from(document.data.as_ref()) {
            let mut puts = self.puts.lock();
            let put = puts
                .entry(u64::from_le_bytes(bytes))
                .or_insert_with(|| Put {
                    key: document.id,
                    stamp: document.last_updated,
                    holders: BTreeSet::new(),
                });
            put.holders.insert(node);
        }
    }

    pub(crate) fn saw_delete(&self, node: NodeId, key: Key, stamp: HLCTimestamp) {
        let mut tombstones = self.tombstones.lock();
        let tombstone = tombstones
            .entry(key)
            .or_default()
            .entry(stamp)
            .or_insert_with(|| Tombstone {
                holders: BTreeSet::new(),
                first_stored: self.tick(),
            });
        tombstone.holders.insert(node);
    }
}

/// Whether some put of `key` was stamped `stamp`.
fn is_put_stamp(puts: &HashMap<u64, Put>, key: Key, stamp: HLCTimestamp) -> bool {
    puts.values()
        .any(|put| put.key == key && put.stamp == stamp)
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
        } else if keyspace == PURGE_WATERMARK_KEYSPACE {
            self.recorder.saw_watermark(self.node, &document);
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
