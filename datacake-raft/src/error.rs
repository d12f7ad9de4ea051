//! [`RaftError`]: why a Raft operation failed.

use std::path::PathBuf;

use datacake_node::NodeId;

/// Why a Raft operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// This node is not the leader (and the operation is not forwarded); `leader` is the
    /// leader it knows of, if any.
    #[error("this node is not the leader (known leader: {leader:?})")]
    NotLeader {
        /// The current leader as far as this node knows.
        leader: Option<NodeId>,
    },
    /// The leader could not confirm its leadership with a quorum: a linearizable read that
    /// failed to, or a write or read whose deadline passed on a leader no quorum had
    /// acknowledged within the lease (see [`RaftHandle::has_quorum`](crate::RaftHandle::has_quorum)).
    /// A write that fails so may still be committed later, if the leader regains its quorum.
    #[error("leadership could not be confirmed by a quorum")]
    QuorumUnavailable,
    /// The call's deadline passed (see
    /// [`RaftConfig::with_request_timeout`](crate::RaftConfig::with_request_timeout)). The
    /// outcome of a write is unknown: it may still be committed.
    #[error("no answer within {after:?}")]
    Timeout {
        /// The deadline the call had.
        after: std::time::Duration,
    },
    /// A membership change was refused (e.g. another one is in progress).
    #[error("membership change refused: {reason}")]
    Membership {
        /// Why openraft refused it.
        reason: String,
    },
    /// The node is not a live member of the gossip cluster, so its address is unknown.
    #[error("node {node_id} is not a live member of the cluster")]
    UnknownNode {
        /// The node asked for.
        node_id: NodeId,
    },
    /// A command, response, query or answer could not be encoded or decoded.
    #[error("could not encode or decode a value: {reason}")]
    Codec {
        /// The codec's message.
        reason: String,
    },
    /// The archived command is larger than a node proposes (1 MiB): it would make the
    /// append-entries messages that carry it too large for the peers to take.
    #[error("the command is {size} bytes archived, above the limit of {limit}")]
    CommandTooLarge {
        /// The archived command's size in bytes.
        size: u64,
        /// The most bytes a command may take.
        limit: u64,
    },
    /// The log, vote or snapshot storage failed.
    #[error("raft storage failed: {reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
    /// A durable log or snapshot file was written in another storage format than this build
    /// reads (e.g. the unversioned JSON of releases before format 1): the node refuses to
    /// start rather than misread it. Open the directory with the release that wrote it, or
    /// move it aside and let the node catch up from its peers.
    #[error(
        "{} is in storage format {}, but this build reads format {expected}",
        .path.display(),
        .found.map_or_else(|| "0 (unversioned JSON)".to_string(), |v| v.to_string())
    )]
    IncompatibleFormat {
        /// The file refused.
        path: PathBuf,
        /// The format version it carries; `None` for a file without one (JSON, before
        /// format 1).
        found: Option<u32>,
        /// The format version this build reads and writes.
        expected: u32,
    },
    /// The [`RaftConfig`](crate::RaftConfig) was rejected.
    #[error("invalid raft configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
    /// A forwarded call failed on the way (a forwarded write may or may not have been
    /// applied).
    #[error(transparent)]
    Rpc(#[from] datacake_rpc::Status),
    /// Raft has stopped on this node (the node shut down, or storage failed).
    #[error("raft has stopped")]
    Stopped,
}

impl RaftError {
    pub(crate) fn codec(e: impl std::fmt::Display) -> Self {
        Self::Codec {
            reason: e.to_string(),
        }
    }
}
