//! [`Role`], [`RaftStatus`] and the [`RaftEvents`] stream derived from openraft's metrics.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use datacake_node::NodeId;
use openraft::ServerState;
use tokio::sync::watch;

use crate::committed::CommitIndex;
use crate::types::Metrics;

/// A node's role in the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not (yet) part of a cluster, removed from it, or stopped.
    Inactive,
    /// Receives the log but does not vote.
    Learner,
    /// A voter following a leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// The voter that orders writes.
    ///
    /// A leader cut off from its quorum keeps this role: openraft 0.9 has no check-quorum
    /// step-down, so the node reports `Leader` (and its term) until it hears of a higher term,
    /// typically when the partition heals. Meanwhile nothing it orders commits (a write waits;
    /// bound it with a timeout) and a [`Linearizable`](crate::ReadConsistency::Linearizable)
    /// read fails with [`QuorumUnavailable`](crate::RaftError::QuorumUnavailable), which is the
    /// way to confirm leadership. The rest of the cluster may have elected another leader
    /// already, so two nodes can report `Leader` at once (in different terms).
    Leader,
}

/// Counters of one node's Raft state (see [`RaftHandle::status`](crate::RaftHandle::status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RaftStatus {
    /// This node's role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The commit index: the highest log index this node knows to be committed (stored by a
    /// majority of the voters), on every role. openraft 0.9 publishes it in no metric; it
    /// tells each node's log store (the leader when a majority stored an entry of its term,
    /// a follower or learner from the leader's messages, as far as its own log reaches),
    /// which is where this value comes from. `None` until this node learns of a commit.
    /// [`applied_index`](Self::applied_index) follows it once the entries are applied. A
    /// leader cut off from its quorum keeps its last commit index (it stays in the
    /// [`Role::Leader`] role).
    pub commit_index: Option<u64>,
    /// The index of the last entry applied to the state machine.
    pub applied_index: Option<u64>,
    /// The index the latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The index up to which the log has been purged.
    pub purged_index: Option<u64>,
    /// The voters.
    pub voters: BTreeSet<NodeId>,
    /// The learners.
    pub learners: BTreeSet<NodeId>,
    /// On the leader: how many entries each peer's replicated log is behind the leader's.
    pub peer_lag: BTreeMap<NodeId, u64>,
}

fn id(raw: u64) -> NodeId {
    NodeId::try_from(raw).unwrap_or(NodeId::MAX)
}

impl RaftStatus {
    pub(crate) fn from_metrics(m: &Metrics, commit: &CommitIndex) -> Self {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().map(id).collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().map(id).collect();
        let me = id(m.id);
        let member = voters.contains(&me) || learners.contains(&me);
        let role = match m.state {
            _ if !member => Role::Inactive,
            ServerState::Leader => Role::Leader,
            ServerState::Candidate => Role::Candidate,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Inactive,
        };
        let last = m.last_log_index.unwrap_or(0);
        let peer_lag = m
            .replication
            .iter()
            .flatten()
            .map(|(peer, matched)| {
                (
                    id(*peer),
                    last.saturating_sub(matched.map_or(0, |l| l.index)),
                )
            })
            .collect();
        Self {
            role,
            term: m.current_term,
            leader: m.current_leader.map(id),
            last_log_index: m.last_log_index,
            commit_index: commit.get(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters,
            learners,
            peer_lag,
        }
    }
}

/// A change of this node's view of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaftEvent {
    /// This node's role changed.
    RoleChanged(Role),
    /// The known leader changed.
    LeaderChanged(Option<NodeId>),
    /// The membership changed.
    MembershipChanged {
        /// The voters now.
        voters: BTreeSet<NodeId>,
        /// The learners now.
        learners: BTreeSet<NodeId>,
    },
}

/// The events that lead from `last` to `now`: role, then leader, then membership. The one
/// derivation of events, for [`RaftEvents`] and for the metrics task.
pub(crate) fn changes(last: &RaftStatus, now: &RaftStatus) -> impl Iterator<Item = RaftEvent> {
    let role = (now.role != last.role).then_some(RaftEvent::RoleChanged(now.role));
    let leader = (now.leader != last.leader).then_some(RaftEvent::LeaderChanged(now.leader));
    let membership = (now.voters != last.voters || now.learners != last.learners).then(|| {
        RaftEvent::MembershipChanged {
            voters: now.voters.clone(),
            learners: now.learners.clone(),
        }
    });
    role.into_iter().chain(leader).chain(membership)
}

/// A stream of [`RaftEvent`]s from the moment it was created
/// ([`RaftHandle::events`](crate::RaftHandle::events)). Intermediate states between two
/// polls may be coalesced.
#[derive(Debug)]
pub struct RaftEvents {
    rx: watch::Receiver<Metrics>,
    commit: Arc<CommitIndex>,
    last: RaftStatus,
    queue: VecDeque<RaftEvent>,
}

impl RaftEvents {
    pub(crate) fn new(rx: watch::Receiver<Metrics>, commit: Arc<CommitIndex>) -> Self {
        let last = RaftStatus::from_metrics(&rx.borrow(), &commit);
        Self {
            rx,
            commit,
            last,
            queue: VecDeque::new(),
        }
    }

    /// The next event; `None` once Raft has stopped.
    pub async fn next(&mut self) -> Option<RaftEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            self.rx.changed().await.ok()?;
            let now = RaftStatus::from_metrics(&self.rx.borrow_and_update(), &self.commit);
            self.queue.extend(changes(&self.last, &now));
            self.last = now;
        }
    }

    /// The events as a [`Stream`](futures::Stream).
    pub fn into_stream(self) -> impl futures::Stream<Item = RaftEvent> + Send + Unpin {
        Box::pin(futures::stream::unfold(self, |mut events| async move {
            let event = events.next().await?;
            Some((event, events))
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::committed::Observed;
    use crate::log_store::MemLogStore;
    use crate::types::{LogId, StoredMembership};

    /// A follower reports the commit index its log store was told (openraft 0.9 publishes no
    /// commit index in its metrics; before, followers reported none).
    #[tokio::test]
    async fn a_follower_reports_the_commit_index_its_log_store_was_told() {
        let mut m = Metrics::new_initial(2);
        m.state = ServerState::Follower;
        m.current_term = 3;
        m.current_leader = Some(1);
        m.membership_config = Arc::new(StoredMembership::new(
            None,
            Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeSet::new()),
        ));
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(3, 1), 4));
        let commit = Arc::new(CommitIndex::default());
        let status = RaftStatus::from_metrics(&m, &commit);
        assert_eq!((status.role, status.commit_index), (Role::Follower, None));

        let mut log = Observed::new(MemLogStore::default(), commit.clone());
        let committed = LogId::new(CommittedLeaderId::new(3, 1), 6);
        log.save_committed(Some(committed)).await.unwrap();
        let status = RaftStatus::from_metrics(&m, &commit);
        assert_eq!(status.commit_index, Some(6));
        assert_eq!(status.applied_index, Some(4));
        // Index 0 is an index like any other.
        let first = LogId::new(CommittedLeaderId::new(1, 1), 0);
        log.save_committed(Some(first)).await.unwrap();
        assert_eq!(commit.get(), Some(0));
    }
}
