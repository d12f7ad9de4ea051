//! Handles to read and write the store: [`ReplicatedStoreHandle`] (any keyspace) and
//! [`ReplicatedKeyspaceHandle`] (one keyspace).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use datacake_node::Consistency;

use crate::error::StoreError;
use crate::storage::{Document, Key, Metadata, Storage};
use crate::store::{Shared, StoreStatistics};

/// Reads and writes every keyspace of a store. Cheap to clone.
///
/// Writes are stamped with the node's clock, applied locally, sent to every live node in
/// batches, and return once `consistency` was met (see [`StoreError`]). Reads at
/// [`Consistency::None`] (or [`get_local`](Self::get_local)) come from this node's storage;
/// at other levels they ask the replicas and return the newest version (see
/// [`get`](Self::get)).
pub struct ReplicatedStoreHandle<S: Storage> {
    shared: Arc<Shared<S>>,
}

impl<S: Storage> Clone for ReplicatedStoreHandle<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for ReplicatedStoreHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedStoreHandle")
            .finish_non_exhaustive()
    }
}

impl<S: Storage> ReplicatedStoreHandle<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Self { shared }
    }

    /// The live document `id` of `keyspace`, read at `consistency`.
    ///
    /// At [`Consistency::None`] this node's copy. At any other level the read asks the live
    /// replicas and waits for as many answers as a write at that level waits for
    /// acknowledgements (this node's own copy counts as one, as for writes), then returns
    /// the newest version among them (`None` if the newest is a delete). So a `Quorum` read
    /// after a `Quorum` write sees that write or a newer one. Replicas that answered with an
    /// older version (this node included) are repaired in the background
    /// ([`StoreStatistics::read_repairs`](crate::StoreStatistics::read_repairs)). Fails like
    /// a write: [`ConsistencyError::NotEnoughNodes`](crate::ConsistencyError::NotEnoughNodes)
    /// before asking anyone, [`StoreError::ReplicaFailed`] when replicas fail so that the
    /// level can no longer be met, a consistency failure at the read timeout.
    pub async fn get(
        &self,
        keyspace: &str,
        id: Key,
        consistency: Consistency,
    ) -> Result<Option<Document>, StoreError<S::Error>> {
        let docs = self.shared.read(keyspace, vec![id], consistency).await?;
        Ok(docs.into_iter().next())
    }

    /// The live documents among `ids` in `keyspace`, read at `consistency` (see
    /// [`get`](Self::get)), in no particular order.
    pub async fn get_many(
        &self,
        keyspace: &str,
        ids: impl IntoIterator<Item = Key>,
        consistency: Consistency,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.shared
            .read(keyspace, ids.into_iter().collect(), consistency)
            .await
    }

    /// This node's copy of the live document `id` of `keyspace`: `get` at
    /// [`Consistency::None`], the read of the original datacake API.
    pub async fn get_local(
        &self,
        keyspace: &str,
        id: Key,
    ) -> Result<Option<Document>, StoreError<S::Error>> {
        let docs = self
            .shared
            .read(keyspace, vec![id], Consistency::None)
            .await?;
        Ok(docs.into_iter().next())
    }

    /// This node's copies of the live documents among `ids`: `get_many` at
    /// [`Consistency::None`].
    pub async fn get_many_local(
        &self,
        keyspace: &str,
        ids: impl IntoIterator<Item = Key>,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.shared
            .read(keyspace, ids.into_iter().collect(), Consistency::None)
            .await
    }

    /// Writes the document `id` of `keyspace`.
    pub async fn put(
        &self,
        keyspace: &str,
        id: Key,
        data: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        self.shared
            .mutate(keyspace, vec![(id, Some(data.into()))], consistency)
            .await
    }

    /// Writes several documents of `keyspace` (one replication batch).
    pub async fn put_many<D: Into<Bytes>>(
        &self,
        keyspace: &str,
        documents: impl IntoIterator<Item = (Key, D)>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        let ops = documents
            .into_iter()
            .map(|(id, data)| (id, Some(data.into())))
            .collect();
        self.shared.mutate(keyspace, ops, consistency).await
    }

    /// Deletes the document `id` of `keyspace` (Ok even if it never existed).
    pub async fn del(
        &self,
        keyspace: &str,
        id: Key,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        self.shared
            .mutate(keyspace, vec![(id, None)], consistency)
            .await
    }

    /// Deletes several documents of `keyspace`.
    pub async fn del_many(
        &self,
        keyspace: &str,
        ids: impl IntoIterator<Item = Key>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        let ops = ids.into_iter().map(|id| (id, None)).collect();
        self.shared.mutate(keyspace, ops, consistency).await
    }

    /// Every `(id, timestamp, is_tombstone)` this node holds for `keyspace` (from memory).
    pub fn iter_metadata(&self, keyspace: &str) -> Vec<Metadata> {
        self.shared.replica.metadata(keyspace)
    }

    /// The keyspaces this node holds.
    pub fn get_keyspace_list(&self) -> Vec<String> {
        self.shared.replica.keyspace_names()
    }

    /// A 64-bit digest of this node's metadata for `keyspace` (every id with its timestamp,
    /// tombstones included), `None` if the node holds no such keyspace. Nodes holding the
    /// same entries have the same digest, and nodes that differ almost surely do not, so
    /// comparing it across nodes is a cheap convergence check: it is kept up to date with
    /// every write, and reading it costs no more than a lock.
    pub fn metadata_digest(&self, keyspace: &str) -> Option<u64> {
        self.shared.replica.total(keyspace)
    }

    /// The store's counters, as
    /// [`EventuallyConsistentStore::statistics`](crate::EventuallyConsistentStore::statistics)
    /// gives them.
    pub fn statistics(&self) -> StoreStatistics {
        self.shared.statistics()
    }
}

/// Like [`ReplicatedStoreHandle`], bound to one keyspace. Cheap to clone.
pub struct ReplicatedKeyspaceHandle<S: Storage> {
    inner: ReplicatedStoreHandle<S>,
    keyspace: Arc<str>,
}

/// The name datacake 0.x gave [`ReplicatedKeyspaceHandle`].
pub type ReplicatorKeyspaceHandle<S> = ReplicatedKeyspaceHandle<S>;

impl<S: Storage> Clone for ReplicatedKeyspaceHandle<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keyspace: self.keyspace.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for ReplicatedKeyspaceHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedKeyspaceHandle")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> ReplicatedKeyspaceHandle<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, keyspace: Arc<str>) -> Self {
        Self {
            inner: ReplicatedStoreHandle::new(shared),
            keyspace,
        }
    }

    /// The keyspace this handle is bound to.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The live document `id`, read at `consistency` (see [`ReplicatedStoreHandle::get`]).
    pub async fn get(
        &self,
        id: Key,
        consistency: Consistency,
    ) -> Result<Option<Document>, StoreError<S::Error>> {
        self.inner.get(&self.keyspace, id, consistency).await
    }

    /// The live documents among `ids`, read at `consistency`, in no particular order.
    pub async fn get_many(
        &self,
        ids: impl IntoIterator<Item = Key>,
        consistency: Consistency,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.inner.get_many(&self.keyspace, ids, consistency).await
    }

    /// This node's copy of the live document `id`.
    pub async fn get_local(&self, id: Key) -> Result<Option<Document>, StoreError<S::Error>> {
        self.inner.get_local(&self.keyspace, id).await
    }

    /// This node's copies of the live documents among `ids`.
    pub async fn get_many_local(
        &self,
        ids: impl IntoIterator<Item = Key>,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.inner.get_many_local(&self.keyspace, ids).await
    }

    /// Writes the document `id`.
    pub async fn put(
        &self,
        id: Key,
        data: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        self.inner.put(&self.keyspace, id, data, consistency).await
    }

    /// Writes several documents.
    pub async fn put_many<D: Into<Bytes>>(
        &self,
        documents: impl IntoIterator<Item = (Key, D)>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        self.inner
            .put_many(&self.keyspace, documents, consistency)
            .await
    }

    /// Deletes the document `id` (Ok even if it never existed).
    pub async fn del(&self, id: Key, consistency: Consistency) -> Result<(), StoreError<S::Error>> {
        self.inner.del(&self.keyspace, id, consistency).await
    }

    /// Deletes several documents.
    pub async fn del_many(
        &self,
        ids: impl IntoIterator<Item = Key>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        self.inner.del_many(&self.keyspace, ids, consistency).await
    }

    /// Every `(id, timestamp, is_tombstone)` this node holds for the keyspace.
    pub fn iter_metadata(&self) -> Vec<Metadata> {
        self.inner.iter_metadata(&self.keyspace)
    }

    /// The keyspaces this node holds.
    pub fn get_keyspace_list(&self) -> Vec<String> {
        self.inner.get_keyspace_list()
    }

    /// The keyspace's metadata digest (see [`ReplicatedStoreHandle::metadata_digest`]).
    pub fn metadata_digest(&self) -> Option<u64> {
        self.inner.metadata_digest(&self.keyspace)
    }
}
