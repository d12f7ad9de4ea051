//! The store's error type, [`StoreError`], and [`ConfigError`].

use std::error::Error;
use std::net::SocketAddr;

use datacake_crdt::TimestampError;
use datacake_node::{Consistency, ConsistencyError, NodeId};
use datacake_rpc::Status;

use crate::storage::{BulkMutationError, Key};

/// Why a store operation failed. `E` is the [`Storage`](crate::Storage)'s error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// The local storage failed.
    #[error("the local storage failed")]
    Storage(#[source] E),
    /// A bulk storage call failed part-way (the error names the ids that were applied).
    #[error("the local storage failed in a bulk call")]
    BulkStorage(#[source] BulkMutationError<E>),
    /// The consistency level could not be met: too few of its replicas are live (nothing was
    /// written), or too few acknowledged before the deadline (the local write is kept and
    /// replication continues).
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    /// Replicas refused or failed a write (or a read) so that its consistency level can no
    /// longer be met; the error names the last replica that failed and why. For a write, the
    /// local write is kept and repair brings the replicas up to date.
    #[error(
        "{level} cannot be met ({acknowledged} of {required} acknowledgements): node {node_id} \
         at {peer} failed"
    )]
    ReplicaFailed {
        /// The level asked for.
        level: Consistency,
        /// Acknowledgements that counted before the level became impossible.
        acknowledged: usize,
        /// Acknowledgements the level needs.
        required: usize,
        /// The replica that failed last.
        node_id: NodeId,
        /// Its address.
        peer: SocketAddr,
        /// What it answered (or what went wrong reaching it).
        #[source]
        source: Box<Status>,
    },
    /// The keyspace name is reserved for the store's own bookkeeping (it starts with
    /// [`RESERVED_KEYSPACE_PREFIX`](crate::RESERVED_KEYSPACE_PREFIX)).
    #[error("keyspace {keyspace:?} is reserved for the store")]
    ReservedKeyspace {
        /// The refused name.
        keyspace: String,
    },
    /// The keyspace name is empty or longer than the maximum
    /// ([`with_max_keyspace_name_len`](crate::EventuallyConsistentStoreExtension::with_max_keyspace_name_len)).
    #[error("keyspace name of {len} bytes: names must be 1 to {max} bytes long")]
    InvalidKeyspaceName {
        /// The name's length in bytes.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// A write would create a keyspace beyond the maximum number
    /// ([`with_max_keyspaces`](crate::EventuallyConsistentStoreExtension::with_max_keyspaces)).
    #[error("the store already holds its maximum of {max} keyspaces")]
    TooManyKeyspaces {
        /// The most keyspaces a store holds.
        max: usize,
    },
    /// A document is larger than the largest one every replica can be sent in one message;
    /// refused before anything was written.
    #[error("document {id} is {size} bytes; the largest accepted is {max} bytes")]
    DocumentTooLarge {
        /// The document's id.
        id: Key,
        /// Its size in bytes.
        size: usize,
        /// The largest size accepted.
        max: usize,
    },
    /// The clock cannot stamp a write of `id` newer than what the store holds for it: the
    /// held version is further ahead of the wall clock than the drift bound (written while
    /// the clock ran fast). Writes of the id succeed again once the wall clock has caught up.
    #[error("cannot stamp a write of id {id} newer than the version held")]
    Clock {
        /// The document id.
        id: Key,
        /// Why the clock refused.
        #[source]
        source: TimestampError,
    },
    /// A persisted purge watermark could not be decoded on start-up; starting without it
    /// could let purged deletes resurrect, so the store refuses to start.
    #[error("malformed purge watermark document {id} in the storage")]
    CorruptPurgeWatermark {
        /// The id of the document in
        /// [`PURGE_WATERMARK_KEYSPACE`](crate::PURGE_WATERMARK_KEYSPACE).
        id: u64,
    },
    /// A persisted member record could not be decoded on start-up; starting without it could
    /// let a tombstone be purged before that member saw it, so the store refuses to start.
    #[error("malformed member record {id} in the storage")]
    CorruptMemberRecord {
        /// The id of the document in [`MEMBERS_KEYSPACE`](crate::MEMBERS_KEYSPACE).
        id: u64,
    },
    /// The cluster lists a newer incarnation of this node's id (at `newer`) instead of this
    /// process ([`DatacakeHandle::superseded_by`](datacake_node::DatacakeHandle::superseded_by)):
    /// its writes would carry the same node id as the newer process's, and two writes with
    /// one stamp would let replicas disagree. Refused before anything is written; stop this
    /// process.
    #[error("node {node_id} was started again at {newer}: this process no longer writes")]
    Superseded {
        /// This node's id.
        node_id: NodeId,
        /// Where the newer incarnation runs.
        newer: std::net::SocketAddr,
    },
    /// This node's wall clock runs ahead of most of its live peers' clocks by more than the
    /// clock drift bound: they would refuse its stamps, and a copy kept here would later
    /// win over everything written meanwhile. Refused before anything is written, until
    /// the clock is corrected (see the crate docs, "Clock skew").
    #[error("this node's clock is at least {by:?} ahead of {behind} of its {live} live peers: no writes until it is corrected")]
    ClockAhead {
        /// How many live peers' clocks are that far behind.
        behind: usize,
        /// How many live peers there are.
        live: usize,
        /// The least lead over those peers (drift bound and transit margin included).
        by: std::time::Duration,
    },
    /// `remove_member` was asked to remove a node that is live: a live node is a member.
    #[error("node {node_id} is live; only a member that is down can be removed")]
    MemberIsLive {
        /// The node.
        node_id: NodeId,
    },
    /// `remove_member` was asked to remove a node this store never knew of.
    #[error("node {node_id} is not a known member")]
    UnknownMember {
        /// The node.
        node_id: NodeId,
    },
    /// The runtime shut down while a write was under way: it may or may not have been
    /// applied.
    #[error("the runtime shut down while the write was under way")]
    Interrupted,
    /// A setting is invalid; the store did not start.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A repair round with a peer ran past its deadline
    /// ([`with_repair_round_timeout`](crate::EventuallyConsistentStoreExtension::with_repair_round_timeout))
    /// and was cut off: it keeps what it took and confirms nothing.
    #[error("repair round with {peer} cut off after {after:?}")]
    RepairTimedOut {
        /// The peer's address.
        peer: SocketAddr,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// A call to a peer failed.
    #[error("rpc to {peer} failed")]
    Transport {
        /// The peer's address.
        peer: SocketAddr,
        /// What went wrong.
        #[source]
        source: Status,
    },
}

/// A store setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store setting `{setting}`: {reason}")]
pub struct ConfigError {
    /// The setting, as named by its `with_*` setter.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

impl<E> StoreError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// `Err(ReservedKeyspace)` if `keyspace` is reserved for the store.
    pub(crate) fn check_reserved(keyspace: &str) -> Result<(), Self> {
        if crate::watermark::is_reserved(keyspace) {
            return Err(Self::ReservedKeyspace {
                keyspace: keyspace.to_owned(),
            });
        }
        Ok(())
    }
}
