//! [`MemStore`]: an in-memory [`Storage`] for tests, examples and benchmarks; and
//! [`FaultyStorage`], a wrapper whose writes can be made to fail (and whose reads and writes
//! can be slowed down), which also records the document bytes its calls moved, for fault
//! tests and tests of how much a store reads or writes at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datacake_crdt::HLCTimestamp;
use parking_lot::{Mutex, RwLock};

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
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        Ok(keys
            .iter()
            .filter(|k| seen.insert(**k))
            .filter_map(|k| ks.docs.get(k).cloned())
            .collect())
    }
}

/// The error of a [`FaultyStorage`]: the wrapped storage's, or an injected failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultyError<E: std::error::Error + 'static> {
    /// The wrapped storage failed.
    #[error(transparent)]
    Inner(E),
    /// Writes were switched off with [`FaultyStorage::fail_writes`].
    #[error("injected write failure")]
    Injected,
}

/// A hook a [`FaultyStorage`] awaits before every write, e.g. to delay writes or hold
/// them at a gate.
pub type WriteHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A hook a [`FaultyStorage`] awaits before every document read (`get`, `multi_get`), e.g.
/// to make a slow disk.
pub type ReadHook = WriteHook;

/// Wraps a [`Storage`] for fault tests: while [`fail_writes`](Self::fail_writes) is on,
/// every write returns [`FaultyError::Injected`] and changes nothing, as a full disk would;
/// an optional [`WriteHook`] runs before every write (to slow writes down, scramble their
/// order, or hold them at a gate), and an optional [`ReadHook`] before every document read.
/// Reads otherwise pass through. It records the document bytes its reads returned
/// ([`bytes_read`](Self::bytes_read)) and the most one write call stored
/// ([`largest_write`](Self::largest_write)). Clones share the switch, the hooks, the counts
/// and the storage.
///
/// ```
/// use datacake_crdt::HLCTimestamp;
/// use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
/// use datacake_eventual_consistency::{Document, Storage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let storage = FaultyStorage::new(MemStore::default());
/// storage.fail_writes(true);
/// let doc = Document::new(1, HLCTimestamp::new(1, 0, 0), "a");
/// assert!(storage.put("ks", doc.clone()).await.is_err());
/// assert_eq!(storage.refused("ks"), 1);
/// storage.fail_writes(false);
/// storage.put("ks", doc).await.unwrap();
/// assert_eq!(storage.largest_write(), 1);
/// storage.multi_get("ks", vec![1, 9]).await.unwrap();
/// assert_eq!(storage.bytes_read(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    failing: Arc<AtomicBool>,
    /// Refused writes by keyspace.
    refused: Arc<Mutex<HashMap<String, u64>>>,
    hook: Option<WriteHook>,
    read_hook: Option<ReadHook>,
    bytes_read: Arc<AtomicU64>,
    largest_write: Arc<AtomicUsize>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for FaultyStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("failing", &self.failing)
            .field("refused", &self.refused)
            .field("hook", &self.hook.is_some())
            .field("read_hook", &self.read_hook.is_some())
            .finish()
    }
}

impl<S: Storage> FaultyStorage<S> {
    /// `inner`, with writes working.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
            refused: Arc::default(),
            hook: None,
            read_hook: None,
            bytes_read: Arc::default(),
            largest_write: Arc::default(),
        }
    }

    /// The document bytes every read so far returned.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    /// The most document bytes one write call stored (a `put`'s document, or all the
    /// documents of a `multi_put`).
    pub fn largest_write(&self) -> usize {
        self.largest_write.load(Ordering::SeqCst)
    }

    fn wrote<'a>(&self, documents: impl IntoIterator<Item = &'a Document>) {
        let bytes = documents.into_iter().map(|d| d.data.len()).sum();
        self.largest_write.fetch_max(bytes, Ordering::SeqCst);
    }

    fn returned<'a>(&self, documents: impl IntoIterator<Item = &'a Document>) {
        let bytes: usize = documents.into_iter().map(|d| d.data.len()).sum();
        self.bytes_read.fetch_add(bytes as u64, Ordering::SeqCst);
    }

    /// `inner`, with `hook` awaited before every write.
    pub fn with_write_hook(inner: S, hook: WriteHook) -> Self {
        Self {
            hook: Some(hook),
            ..Self::new(inner)
        }
    }

    /// `inner`, with `hook` awaited before every document read (`get`, `multi_get`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore, ReadHook};
    /// use datacake_eventual_consistency::Storage;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let slow: ReadHook = Arc::new(|| Box::pin(tokio::time::sleep(Duration::from_millis(1))));
    /// let storage = FaultyStorage::with_read_hook(MemStore::default(), slow);
    /// assert_eq!(storage.get("ks", 1).await.unwrap(), None);
    /// # }
    /// ```
    pub fn with_read_hook(inner: S, hook: ReadHook) -> Self {
        Self {
            read_hook: Some(hook),
            ..Self::new(inner)
        }
    }

    async fn before_read(&self) {
        if let Some(hook) = &self.read_hook {
            hook().await;
        }
    }

    /// Switches write failures on or off.
    pub fn fail_writes(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many writes to `keyspace` failed because failures were switched on. A test waits
    /// on it to know a write it expects to be refused has reached this storage (counted by
    /// keyspace because the store writes its own records too, e.g. of the members it saw).
    pub fn refused(&self, keyspace: &str) -> u64 {
        self.refused.lock().get(keyspace).copied().unwrap_or(0)
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn check(&self, keyspace: &str) -> Result<(), FaultyError<S::Error>> {
        if let Some(hook) = &self.hook {
            hook().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            *self.refused.lock().entry(keyspace.to_owned()).or_default() += 1;
            return Err(FaultyError::Injected);
        }
        Ok(())
    }

    async fn check_bulk(
        &self,
        keyspace: &str,
    ) -> Result<(), BulkMutationError<FaultyError<S::Error>>> {
        self.check(keyspace).await.map_err(BulkMutationError::empty)
    }
}

fn bulk<E: std::error::Error + Send + Sync + 'static>(
    error: BulkMutationError<E>,
) -> BulkMutationError<FaultyError<E>> {
    BulkMutationError::new(FaultyError::Inner(error.inner), error.successful_doc_ids)
}

#[async_trait]
impl<S: Storage> Storage for FaultyStorage<S> {
    type Error = FaultyError<S::Error>;

    async fn get_keyspace_list(&self) -> Result<Vec<String>, Self::Error> {
        self.inner
            .get_keyspace_list()
            .await
            .map_err(FaultyError::Inner)
    }

    async fn iter_metadata(&self, keyspace: &str) -> Result<Vec<Metadata>, Self::Error> {
        self.inner
            .iter_metadata(keyspace)
            .await
            .map_err(FaultyError::Inner)
    }

    async fn remove_tombstones(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.check_bulk(keyspace).await?;
        self.inner
            .remove_tombstones(keyspace, keys)
            .await
            .map_err(bulk)
    }

    async fn put(&self, keyspace: &str, document: Document) -> Result<(), Self::Error> {
        self.check(keyspace).await?;
        self.wrote([&document]);
        self.inner
            .put(keyspace, document)
            .await
            .map_err(FaultyError::Inner)
    }

    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.check_bulk(keyspace).await?;
        self.wrote(&documents);
        self.inner
            .multi_put(keyspace, documents)
            .await
            .map_err(bulk)
    }

    async fn mark_as_tombstone(
        &self,
        keyspace: &str,
        key: Key,
        timestamp: HLCTimestamp,
    ) -> Result<(), Self::Error> {
        self.check(keyspace).await?;
        self.inner
            .mark_as_tombstone(keyspace, key, timestamp)
            .await
            .map_err(FaultyError::Inner)
    }

    async fn mark_many_as_tombstone(
        &self,
        keyspace: &str,
        keys: Vec<(Key, HLCTimestamp)>,
    ) -> Result<(), BulkMutationError<Self::Error>> {
        self.check_bulk(keyspace).await?;
        self.inner
            .mark_many_as_tombstone(keyspace, keys)
            .await
            .map_err(bulk)
    }

    async fn get(&self, keyspace: &str, key: Key) -> Result<Option<Document>, Self::Error> {
        self.before_read().await;
        let document = self
            .inner
            .get(keyspace, key)
            .await
            .map_err(FaultyError::Inner)?;
        self.returned(&document);
        Ok(document)
    }

    async fn multi_get(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<Vec<Document>, Self::Error> {
        self.before_read().await;
        let documents = self
            .inner
            .multi_get(keyspace, keys)
            .await
            .map_err(FaultyError::Inner)?;
        self.returned(&documents);
        Ok(documents)
    }
}

#[cfg(all(test, feature = "test-suite"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_store_passes_the_conformance_suite() {
        crate::test_suite::run_test_suite(MemStore::new()).await;
    }

    #[tokio::test]
    async fn faulty_storage_passes_the_conformance_suite_while_writes_work() {
        crate::test_suite::run_test_suite(FaultyStorage::new(MemStore::new())).await;
    }

    #[tokio::test]
    async fn multi_get_returns_a_repeated_id_once() {
        let store = MemStore::new();
        let doc = Document::new(1, HLCTimestamp::new(1, 0, 0), "a");
        store.put("ks", doc).await.unwrap();
        assert_eq!(store.multi_get("ks", vec![1, 1, 1]).await.unwrap().len(), 1);
    }
}
