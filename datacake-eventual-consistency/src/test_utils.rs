//! [`MemStore`]: an in-memory [`Storage`] for tests, examples and benchmarks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use datacake_crdt::HLCTimestamp;
use parking_lot::RwLock;

use crate::storage::{BulkMutationError, Document, Key, Metadata, Storage};

/// An in-memory [`Storage`]. Clones share the same data, so a test can keep one clone to
/// inspect and give another to a node (or "restart" a node on the same storage).
///
/// ```
/// use datacake_crdt::HLCTimestamp;
/// use datacake_eventual_consistency::test_utils::MemStore;
/// use datacake_eventual_consistency::{Document, Storage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemStore::default();
/// let doc = Document::new(1, HLCTimestamp::new(1, 0, 0), "a");
/// store.put("ks", doc.clone()).await.unwrap();
/// assert_eq!(store.get("ks", 1).await.unwrap(), Some(doc));
/// # }
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    keyspaces: Arc<RwLock<HashMap<String, MemKeyspace>>>,
}

#[derive(Debug, Default)]
struct MemKeyspace {
    docs: HashMap<Key, Document>,
    tombstones: HashMap<Key, HLCTimestamp>,
}

impl MemKeyspace {
    fn put(&mut self, doc: Document) {
        self.tombstones.remove(&doc.id);
        self.docs.insert(doc.id, doc);
    }

    fn tombstone(&mut self, key: Key, ts: HLCTimestamp) {
        self.docs.remove(&key);
        self.tombstones.insert(key, ts);
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live documents in `keyspace`.
    pub fn len(&self, keyspace: &str) -> usize {
        self.keyspaces
            .read()
            .get(keyspace)
            .map_or(0, |ks| ks.docs.len())
    }

    /// The live document `id` of `keyspace`, read without `await` (for test assertions).
    pub fn get_doc(&self, keyspace: &str, id: Key) -> Option<Document> {
        self.keyspaces
            .read()
            .get(keyspace)
            .and_then(|ks| ks.docs.get(&id).cloned())
    }

    /// Whether `keyspace` holds no live document.
    pub fn is_empty(&self, keyspace: &str) -> bool {
        self.len(keyspace) == 0
    }

    fn write<R>(&self, keyspace: &str, f: impl FnOnce(&mut MemKeyspace) -> R) -> R {
        let mut guard = self.keyspaces.write();
        let ks = match guard.get_mut(keyspace) {
            Some(ks) => ks,
            None => guard.entry(keyspace.to_owned()).or_default(),
        };
        f(ks)
    }
}

#[async_trait]
impl Storage for MemStore {
    type Error = Infallible;

    async fn get_keyspace_list(&self) -> Result<Vec<String>, Self::Error> {
        Ok(self.keyspaces.read().keys().cloned().collect())
    }

    async fn iter_metadata(&self, keyspace: &str) -> Result<Vec<Metadata>, Self::Error> {
        let guard = self.keyspaces.read();
        let Some(ks) = guard.get(keyspace) else {
            return Ok(Vec::new());
        };
        let live = ks.docs.values().map(|d| (d.id, d.last_updated, false));
        let dead = ks.tombstones.iter().map(|(k, ts)| (*k, *ts, true));
        Ok(live.chain(dead).collect())
    }

    async fn remove_tombstones(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        let mut guard = self.keyspaces.write();
        if let Some(ks) = guard.get_mut(keyspace) {
            for key in keys {
                ks.tombstones.remove(&key);
            }
        }
        Ok(())
    }

    async fn put(&self, keyspace: &str, document: Document) -> Result<(), Self::Error> {
        self.write(keyspace, |ks| ks.put(document));
        Ok(())
    }

    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.write(keyspace, |ks| documents.into_iter().for_each(|d| ks.put(d)));
        Ok(())
    }

    async fn mark_as_tombstone(
        &self,
        keyspace: &str,
        key: Key,
        timestamp: HLCTimestamp,
    ) -> Result<(), Self::Error> {
        self.write(keyspace, |ks| ks.tombstone(key, timestamp));
        Ok(())
    }

    async fn mark_many_as_tombstone(
        &self,
        keyspace: &str,
        keys: Vec<(Key, HLCTimestamp)>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.write(keyspace, |ks| {
            keys.into_iter().for_each(|(k, ts)| ks.tombstone(k, ts))
        });
        Ok(())
    }

    async fn get(&self, keyspace: &str, key: Key) -> Result<Option<Document>, Self::Error> {
        Ok(self
            .keyspaces
            .read()
            .get(keyspace)
            .and_then(|ks| ks.docs.get(&key).cloned()))
    }

    async fn multi_get(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<Vec<Document>, Self::Error> {
        let guard = self.keyspaces.read();
        let Some(ks) = guard.get(keyspace) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .filter_map(|k| ks.docs.get(k).cloned())
            .collect())
    }
}

#[cfg(all(test, feature = "test-suite"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_store_passes_the_conformance_suite() {
        crate::test_suite::run_test_suite(MemStore::new()).await;
    }
}
