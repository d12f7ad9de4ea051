//! The openraft type configuration and aliases. Nothing here is public: openraft stays an
//! implementation detail of the crate.

use std::io::Cursor;

use crate::codec::Encoded;
use crate::proposer::Batch;

/// What applying one user command produced: the user's archived response, or why the
/// command could not be decoded.
pub(crate) type Reply = Result<Encoded, String>;

openraft::declare_raft_types!(
    /// The type configuration of every Raft group in this crate.
    pub(crate) TypeConfig:
        // One entry holds a batch of commands and replies with one `Reply` for each (blank
        // and membership entries with none).
        D = Batch,
        R = Vec<Reply>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type RaftNodeId = u64;
pub(crate) type LogId = openraft::LogId<RaftNodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type Vote = openraft::Vote<RaftNodeId>;
pub(crate) type StorageError = openraft::StorageError<RaftNodeId>;
pub(crate) type StorageResult<T> = Result<T, StorageError>;
pub(crate) type StoredMembership = openraft::StoredMembership<RaftNodeId, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<RaftNodeId, openraft::BasicNode>;
pub(crate) type Metrics = openraft::RaftMetrics<RaftNodeId, openraft::BasicNode>;
/// The part of [`Metrics`] that changes with elections, not with every write.
pub(crate) type ServerMetrics =
    openraft::metrics::RaftServerMetrics<RaftNodeId, openraft::BasicNode>;

#[cfg(test)]
mod tests {
    use super::{LogId, Vote};

    /// Standard Raft (openraft's `single-term-leader`): two candidates of one term are not
    /// ordered, so a voter that granted one refuses the other and a term has one leader at
    /// most. openraft's default would order them by node id (the higher one could win the
    /// term a second time).
    #[test]
    fn candidates_of_one_term_are_not_ordered() {
        assert_eq!(Vote::new(4, 1).partial_cmp(&Vote::new(4, 2)), None);
        assert!(Vote::new(5, 1) > Vote::new(4, 2));
        // A log id names the term of its leader, not the node.
        assert_eq!(
            LogId::new(openraft::CommittedLeaderId::new(4, 1), 7),
            LogId::new(openraft::CommittedLeaderId::new(4, 2), 7)
        );
    }
}
