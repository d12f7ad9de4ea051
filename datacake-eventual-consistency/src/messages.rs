//! The messages of the store's RPC service (rkyv archives, validated on receipt).
//!
//! Every reply that carries a variable amount of data is cut by bytes under the message
//! budget ([`StoreConfig::message_budget`](crate::config::StoreConfig::message_budget)) and
//! says where the caller continues: nothing depends on a reply fitting whole.

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;

/// One replicated mutation: `data` is the document for a put, `None` for a delete.
///
/// `data` shares the writer's buffer (`Bytes` archives exactly as a `Vec<u8>` does), so a
/// mutation sent to several peers is copied once per peer, into that peer's archive, and not
/// into a `Vec` first.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireMutation {
    pub(crate) key: u64,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) data: Option<Bytes>,
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

/// Why a receiver refused one mutation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub(crate) enum Refusal {
    /// Its timestamp is further ahead of the receiver's wall clock than the drift bound.
    ClockSkew,
    /// Its keyspace name is invalid or the receiver holds its maximum number of keyspaces.
    Keyspace,
    /// A put of an id the receiver holds nothing for, stamped at or below the receiver's
    /// purge watermark: a writer whose clock lags the cluster's purges (a node that joined
    /// with a slow clock) cannot store it there.
    Purged,
}

/// One refused mutation: its position in the batch (counting through the keyspaces in
/// order) and why.
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Refused {
    pub(crate) index: u32,
    pub(crate) reason: Refusal,
}

/// The reply to a replication batch: the receiver's clock and the mutations it refused
/// (every other mutation is applied, or older than what the receiver holds for its id).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ReplicateAck {
    pub(crate) clock: HLCTimestamp,
    pub(crate) refused: Vec<Refused>,
}

/// The reply to requests that return nothing but the responder's clock.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Ack {
    pub(crate) clock: HLCTimestamp,
}

/// Asks a peer for the digests of its keyspaces, in the name range `(after, until]`, whose
/// totals differ from the requester's (a keyspace one side lacks counts as total 0).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct DigestRequest {
    pub(crate) clock: HLCTimestamp,
    /// The range starts after this name; `None`: at the first name.
    pub(crate) after: Option<String>,
    /// The range ends with this name; `None`: at the last name.
    pub(crate) until: Option<String>,
    /// `(keyspace, total digest)` of every requester keyspace in the range, sorted by name.
    pub(crate) totals: Vec<(String, u64)>,
}

/// One keyspace's digest, at the responder's resolution, with its purge watermark.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireDigest {
    pub(crate) keyspace: String,
    pub(crate) bits: u8,
    /// `2^bits` bucket values, or none for an empty keyspace.
    pub(crate) buckets: Vec<u64>,
    pub(crate) watermark: Option<HLCTimestamp>,
}

/// The digests of the keyspaces that differ, sorted by name.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct DigestReply {
    pub(crate) clock: HLCTimestamp,
    /// Every write the responder stamped or took below this is in the digests; it may
    /// still commit writes at or above it. Taken before the digests.
    pub(crate) floor: HLCTimestamp,
    pub(crate) digests: Vec<WireDigest>,
    /// Set when the reply was cut by size: the range continues after this name.
    pub(crate) resume_after: Option<String>,
}

/// Asks for the `(id, timestamp, tombstone)` entries of some buckets of a keyspace.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct BucketRequest {
    pub(crate) keyspace: String,
    /// The resolution the buckets are numbered at.
    pub(crate) bits: u8,
    /// Ascending bucket numbers.
    pub(crate) buckets: Vec<u32>,
}

/// One entry of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WireEntry {
    pub(crate) key: u64,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) tombstone: bool,
}

/// The entries of the first `complete` requested buckets (whole buckets only).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct BucketReply {
    pub(crate) entries: Vec<WireEntry>,
    pub(crate) complete: u32,
}

/// Asks a replica for its version of some ids: for a read at a consistency level, and for
/// the documents a repair round lacks.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ReadRequest {
    pub(crate) clock: HLCTimestamp,
    pub(crate) keyspace: String,
    pub(crate) keys: Vec<u64>,
}

/// What a replica holds for the first `served` requested ids: a document (`data`) or a
/// tombstone (`None`) each; ids it holds nothing for are left out.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ReadReply {
    pub(crate) clock: HLCTimestamp,
    pub(crate) entries: Vec<WireMutation>,
    pub(crate) served: u32,
}

/// Asks a peer for its clock (the [`ClockFence`](crate::clock_fence)'s reading). The one
/// request a peer never refuses for the caller's clock: it carries none.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ClockProbe {}

/// Tells a peer that a member was removed from the cluster for good (it no longer holds
/// tombstone purge back and no longer counts for consistency levels).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct RemoveMember {
    pub(crate) clock: HLCTimestamp,
    pub(crate) node_id: u32,
}

/// Asks a peer to pull from the sender, which is about to leave the cluster (the hand-off,
/// [`handoff`](crate::handoff)).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct HandOff {
    pub(crate) clock: HLCTimestamp,
    /// The leaving node: the caller.
    pub(crate) node_id: u32,
}

/// A peer's answer: it has pulled from the leaving node.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct HandedOff {
    pub(crate) clock: HLCTimestamp,
    /// Keys the peer took in its round.
    pub(crate) repaired: u64,
}

impl From<WireMutation> for crate::replica::Change {
    fn from(m: WireMutation) -> Self {
        use crate::keyspace::Mutation;
        let (key, timestamp) = (m.key, m.timestamp);
        match m.data {
            Some(data) => Self {
                mutation: Mutation::Put { key, timestamp },
                data: Some(data),
            },
            None => Self {
                mutation: Mutation::Delete { key, timestamp },
                data: None,
            },
        }
    }
}

impl From<&crate::replica::Change> for WireMutation {
    fn from(change: &crate::replica::Change) -> Self {
        Self {
            key: change.mutation.key(),
            timestamp: change.mutation.timestamp(),
            data: change.data.clone(),
        }
    }
}
