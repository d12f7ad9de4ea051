//! [`RaftError`]: why a Raft operation failed.
//!
//! Where a local error caused the failure (an I/O or SQLite error, a codec's, openraft's
//! refusal of the configuration), it is kept as the variant's
//! [`source`](std::error::Error::source), boxed so no dependency's type shows in the API, and
//! the variant's own message does not repeat it: print the chain (e.g. with
//! [`datacake_rpc::error_chain`]) to see every cause.

use std::error::Error;
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
    #[error("could not encode or decode a value")]
    Codec {
        /// Why: the codec's error where this node encoded or decoded the value; its text
        /// where the failure happened inside Raft's apply or on the node a call was forwarded
        /// to (both carry it as text).
        #[source]
        source: Box<dyn Error + Send + Sync>,
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
    #[error("raft storage failed: {what}")]
    Storage {
        /// What failed: the file or the step.
        what: String,
        /// The underlying error (I/O, SQLite, a corrupt file).
        #[source]
        source: Box<dyn Error + Send + Sync>,
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
    /// Another Raft instance holds the durable directory (another process, or one in this
    /// process that has not finished stopping within a few seconds): two instances writing
    /// one log and vote could vote twice in a term or lose acknowledged entries. Stop the
    /// other instance, or give this one its own directory.
    #[error("{} is in use by another raft instance (its lock file is held)", .dir.display())]
    DirectoryInUse {
        /// The durable directory.
        dir: PathBuf,
    },
    /// The [`RaftConfig`](crate::RaftConfig) was rejected.
    #[error("invalid raft configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
        /// The error of the check that refused it, if it was not this crate's own.
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    },
    /// A forwarded call failed on the way (a forwarded write may or may not have been
    /// applied).
    #[error(transparent)]
    Rpc(#[from] datacake_rpc::Status),
    /// Raft has stopped on this node (the node shut down, or storage failed).
    #[error("raft has stopped")]
    Stopped,
    /// The cluster lists a newer incarnation of this node's id (at `newer`) instead of this
    /// process ([`DatacakeHandle::superseded_by`](datacake_node::DatacakeHandle::superseded_by)):
    /// this process stalled or was cut off long enough to be held dead, and its id was
    /// started again. Two processes under one id could vote twice in a term, so Raft has
    /// stopped in this one; stop the process.
    #[error("node {node_id} was started again at {newer}: raft stopped in this process")]
    Superseded {
        /// This node's id.
        node_id: NodeId,
        /// Where the newer incarnation runs.
        newer: std::net::SocketAddr,
    },
}

impl RaftError {
    /// A codec failure caused by `source` (an error, or the text of one).
    pub(crate) fn codec(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Codec {
            source: source.into(),
        }
    }

    /// A storage failure of `what`, caused by `source` (an error, or the text of one).
    pub(crate) fn storage(
        what: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self::Storage {
            what: what.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::RaftError;

    #[test]
    fn a_storage_failure_keeps_its_cause_as_the_source() {
        let error = RaftError::storage("raft.db", io::Error::other("disk full"));
        let source = error.source().expect("a source");
        let io = source.downcast_ref::<io::Error>().expect("the io::Error");
        assert_eq!(io.to_string(), "disk full");
        // The message names what failed; the cause is the source's, not repeated.
        assert_eq!(error.to_string(), "raft storage failed: raft.db");
        assert_eq!(
            datacake_rpc::error_chain(&error),
            "raft storage failed: raft.db: disk full"
        );
    }

    #[test]
    fn a_codec_failure_keeps_its_cause_as_the_source() {
        let status = crate::codec::unarchive::<u64>(crate::codec::Encoded::default())
            .expect_err("no bytes are no u64");
        let error = RaftError::codec(status.clone());
        let source = error
            .source()
            .and_then(|s| s.downcast_ref::<datacake_rpc::Status>());
        assert_eq!(source, Some(&status));
        assert_eq!(error.to_string(), "could not encode or decode a value");
    }
}
