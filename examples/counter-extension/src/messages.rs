//! The messages of the counter's RPC service: rkyv archives, validated by `datacake-rpc`
//! (bytecheck) before a handler sees them.
//!
//! A message from a peer is network input: it may come from a buggy or hostile client. So
//! every variable-sized part has a bound ([`MAX_ENTRIES_PER_MESSAGE`], [`MAX_NAME_LEN`]),
//! checked on the archived bytes *before* anything is deserialised or
//! merged.
//!
//! The types are public so that other tools (and this crate's tests, playing a rogue peer)
//! can speak the protocol with an [`RpcClient`](datacake_rpc::RpcClient) of
//! [`CounterService`](crate::CounterService).

use datacake_crdt::HLCTimestamp;
use datacake_node::NodeId;
use datacake_rpc::Status;

/// The most entries one [`Merge`] or [`FetchReply`] may carry. It is also the most nodes one
/// counter may have totals for, so that a [`FetchReply`] for one counter always fits.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1_024;

/// The longest counter name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// One node's total of one counter: the unit of state the replicas exchange.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Entry {
    /// The counter's name.
    pub name: String,
    /// The node whose increments this total counts.
    pub node: NodeId,
    /// Everything that node ever added to the counter.
    pub total: u64,
}

/// Pushes entries to a peer, which merges them into its state (per-node maximum).
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Merge {
    /// The sending node (checked against its certificate when TLS is on).
    pub from: NodeId,
    /// The sender's clock when it sent: folded into the receiver's clock.
    pub clock: HLCTimestamp,
    /// At most [`MAX_ENTRIES_PER_MESSAGE`] entries.
    pub entries: Vec<Entry>,
}

/// The answer to a [`Merge`]: the receiver applied it.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MergeAck {
    /// The receiver's clock, folded into the sender's.
    pub clock: HLCTimestamp,
}

/// Asks a peer for its entries of one counter.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Fetch {
    /// The asking node.
    pub from: NodeId,
    /// The asker's clock.
    pub clock: HLCTimestamp,
    /// The counter wanted (at most [`MAX_NAME_LEN`] bytes).
    pub name: String,
}

/// The answer to a [`Fetch`]: the peer's entries of that counter.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FetchReply {
    /// The peer's clock.
    pub clock: HLCTimestamp,
    /// At most [`MAX_ENTRIES_PER_MESSAGE`] entries, all of the counter asked for.
    pub entries: Vec<Entry>,
}

/// `Err(InvalidPayload)` unless `name` is 1 to [`MAX_NAME_LEN`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Status::invalid_payload(format!(
            "counter names are 1 to {MAX_NAME_LEN} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// Checks received entries while they are still archived: their count and every name.
/// Cheap (no allocation), so an oversized message is refused before it costs anything.
pub(crate) fn check_entries(entries: &[ArchivedEntry]) -> Result<(), Status> {
    if entries.len() > MAX_ENTRIES_PER_MESSAGE {
        return Err(Status::invalid_payload(format!(
            "{} entries in one message, at most {MAX_ENTRIES_PER_MESSAGE}",
            entries.len()
        )));
    }
    entries.iter().try_for_each(|e| check_name(&e.name))
}
