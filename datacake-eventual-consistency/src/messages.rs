//! The messages of the store's RPC service (rkyv archives, validated on receipt).

use datacake_crdt::HLCTimestamp;

/// One replicated mutation: `data` is the document for a put, `None` for a delete.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireMutation {
    pub(crate) key: u64,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) data: Option<Vec<u8>>,
}

/// The mutations of one keyspace within a batch.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct KeyspaceBatch {
    pub(crate) keyspace: String,
    pub(crate) mutations: Vec<WireMutation>,
}

/// A batch of mutations pushed from one node to a peer.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ReplicateBatch {
    /// The sender's clock, folded into the receiver's.
    pub(crate) clock: HLCTimestamp,
    pub(crate) keyspaces: Vec<KeyspaceBatch>,
}

/// The reply to every request: the responder's clock.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Ack {
    pub(crate) clock: HLCTimestamp,
}

/// Asks a peer for the digests of its keyspaces whose totals differ from the sender's.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct DigestRequest {
    pub(crate) clock: HLCTimestamp,
    /// The requester's node id.
    pub(crate) node_id: u32,
    /// The responder's clock at the start of the requester's last complete repair round
    /// from it: the requester holds (or has newer than) everything the responder held then.
    pub(crate) synced: Option<HLCTimestamp>,
    /// `(keyspace, total digest)` of every keyspace the sender holds.
    pub(crate) totals: Vec<(String, u64)>,
}

/// One keyspace's bucket digests.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireDigest {
    pub(crate) keyspace: String,
    pub(crate) buckets: Vec<u64>,
}

/// The digests of the keyspaces that differ (or that the requester lacks).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct DigestReply {
    pub(crate) clock: HLCTimestamp,
    pub(crate) digests: Vec<WireDigest>,
}

/// Asks for the `(id, timestamp, tombstone)` entries of some buckets of a keyspace.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct BucketRequest {
    pub(crate) keyspace: String,
    pub(crate) buckets: Vec<u32>,
}

/// One entry of a bucket.
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) key: u64,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) tombstone: bool,
}

/// The entries of the requested buckets.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct BucketReply {
    pub(crate) entries: Vec<WireEntry>,
}

/// Asks for the current documents of some ids.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct FetchRequest {
    pub(crate) keyspace: String,
    pub(crate) keys: Vec<u64>,
}

/// The live documents among the requested ids (as mutations, so they apply like writes).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct FetchReply {
    pub(crate) documents: Vec<WireMutation>,
}
