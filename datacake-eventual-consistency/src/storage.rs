//! The [`Storage`] trait: where documents live, and the types it speaks.

use std::error::Error;

use async_trait::async_trait;
use bytes::Bytes;
use datacake_crdt::HLCTimestamp;

/// A document id.
pub type Key = u64;

/// One entry of [`Storage::iter_metadata`]: `(id, timestamp, is_tombstone)`.
pub type Metadata = (Key, HLCTimestamp, bool);

/// A stored document: an id, the timestamp of the write that produced it, and its bytes.
///
/// `data` is a [`Bytes`], so cloning a document or handing it between the network layer and
/// a storage is a reference-count bump, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Document {
    /// The document id, unique within its keyspace.
    pub id: Key,
    /// The timestamp of the write that produced this version.
    pub last_updated: HLCTimestamp,
    /// The document's contents.
    pub data: Bytes,
}

impl Document {
    /// A document `id` written at `last_updated` holding `data`.
    ///
    /// ```
    /// use datacake_crdt::HLCTimestamp;
    /// use datacake_eventual_consistency::Document;
    ///
    /// let doc = Document::new(1, HLCTimestamp::new(1_000, 0, 1), "hello");
    /// assert_eq!(&doc.data[..], b"hello");
    /// ```
    pub fn new(id: Key, last_updated: HLCTimestamp, data: impl Into<Bytes>) -> Self {
        Self {
            id,
            last_updated,
            data: data.into(),
        }
    }

    /// The document id (the `id` field; the accessor datacake 0.x had).
    ///
    /// ```
    /// use datacake_crdt::HLCTimestamp;
    /// use datacake_eventual_consistency::Document;
    ///
    /// let stamp = HLCTimestamp::new(1_000, 0, 1);
    /// let doc = Document::new(7, stamp, "hello");
    /// assert_eq!(doc.id(), 7);
    /// assert_eq!(doc.last_updated(), stamp);
    /// assert_eq!(doc.data(), b"hello");
    /// ```
    pub fn id(&self) -> Key {
        self.id
    }

    /// The timestamp of the write that produced this version (the
    /// `last_updated` field).
    pub fn last_updated(&self) -> HLCTimestamp {
        self.last_updated
    }

    /// The document's contents as a slice (the `data` field, a cheaply
    /// cloned [`Bytes`]).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// A bulk storage call failed part-way: `inner` is the cause, `successful_doc_ids` the ids
/// that were applied before (or despite) it.
#[derive(Debug, thiserror::Error)]
#[error("bulk mutation failed after {} successful ids: {inner}", successful_doc_ids.len())]
pub struct BulkMutationError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// What went wrong.
    #[source]
    pub inner: E,
    /// The ids that were applied.
    pub successful_doc_ids: Vec<Key>,
}

impl<E> BulkMutationError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// A failure after `successful_doc_ids` were applied.
    pub fn new(inner: E, successful_doc_ids: Vec<Key>) -> Self {
        Self {
            inner,
            successful_doc_ids,
        }
    }

    /// A failure before anything was applied.
    pub fn empty(inner: E) -> Self {
        Self::new(inner, Vec::new())
    }

    /// The same as [`empty`](Self::empty), under the name datacake 0.x used.
    pub fn empty_with_error(inner: E) -> Self {
        Self::empty(inner)
    }

    /// What went wrong (the `inner` field).
    ///
    /// ```
    /// use datacake_eventual_consistency::BulkMutationError;
    ///
    /// let err = BulkMutationError::new(std::io::Error::other("disk full"), vec![1, 2]);
    /// assert_eq!(err.cause().to_string(), "disk full");
    /// assert_eq!(err.successful_doc_ids(), &[1, 2]);
    /// assert_eq!(err.into_inner().to_string(), "disk full");
    /// ```
    pub fn cause(&self) -> &E {
        &self.inner
    }

    /// The ids that were applied (the `successful_doc_ids`
    /// field).
    pub fn successful_doc_ids(&self) -> &[Key] {
        &self.successful_doc_ids
    }

    /// The cause, dropping the applied ids.
    pub fn into_inner(self) -> E {
        self.inner
    }
}

/// Where a node keeps its documents and tombstones.
///
/// The replicated store keeps only `(id, timestamp)` metadata in memory and decides, with a
/// CRDT, which writes win; a `Storage` simply does what it is told. Implementations must
/// follow these rules (checked by the conformance suite, `test_suite::run_test_suite`, behind
/// the `test-suite` feature):
///
/// - **Keyspaces** are created by the first write to them; reading an unknown keyspace returns
///   nothing and never creates it.
/// - [`put`](Self::put) stores a document, replacing any document or tombstone with its id.
/// - [`mark_as_tombstone`](Self::mark_as_tombstone) replaces a document (or nothing, for an id
///   never written) with a tombstone at the given timestamp. A tombstoned id is invisible to
///   [`get`](Self::get) and [`multi_get`](Self::multi_get) but listed by
///   [`iter_metadata`](Self::iter_metadata) with `is_tombstone = true`.
/// - [`remove_tombstones`](Self::remove_tombstones) forgets tombstones; a live document with
///   one of the given ids is left alone.
/// - Bulk calls that fail part-way return a [`BulkMutationError`] naming the ids that were
///   applied.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The storage's own error.
    type Error: Error + Send + Sync + 'static;

    /// The names of every keyspace that has been written to.
    async fn get_keyspace_list(&self) -> Result<Vec<String>, Self::Error>;

    /// Every id in `keyspace` (documents and tombstones) with its timestamp and whether it is a
    /// tombstone, in no particular order. Empty for an unknown keyspace.
    async fn iter_metadata(&self, keyspace: &str) -> Result<Vec<Metadata>, Self::Error>;

    /// Forgets the tombstones of `keys` in `keyspace`.
    async fn remove_tombstones(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<(), BulkMutationError<Self::Error>>;

    /// Stores `document` in `keyspace`.
    async fn put(&self, keyspace: &str, document: Document) -> Result<(), Self::Error>;

    /// Stores every document of `documents` in `keyspace`.
    async fn multi_put(
        &self,
        keyspace: &str,
        documents: Vec<Document>,
    ) -> Result<(), BulkMutationError<Self::Error>>;

    /// Replaces `key` in `keyspace` with a tombstone written at `timestamp`.
    async fn mark_as_tombstone(
        &self,
        keyspace: &str,
        key: Key,
        timestamp: HLCTimestamp,
    ) -> Result<(), Self::Error>;

    /// Replaces every `(key, timestamp)` of `keys` with a tombstone.
    async fn mark_many_as_tombstone(
        &self,
        keyspace: &str,
        keys: Vec<(Key, HLCTimestamp)>,
    ) -> Result<(), BulkMutationError<Self::Error>>;

    /// The live document `key` of `keyspace`, if any.
    async fn get(&self, keyspace: &str, key: Key) -> Result<Option<Document>, Self::Error>;

    /// The live documents among `keys` in `keyspace` (missing and tombstoned ids are
    /// skipped), in no particular order, each at most once however often `keys` repeats it.
    async fn multi_get(&self, keyspace: &str, keys: Vec<Key>)
        -> Result<Vec<Document>, Self::Error>;
}
