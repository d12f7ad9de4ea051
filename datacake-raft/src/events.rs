//! [`Role`], [`RaftStatus`] and the [`RaftEvents`] stream derived from openraft's metrics.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use datacake_node::NodeId;
use openraft::ServerState;
use tokio::sync::watch;

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
    /// On the leader: the commit index, the highest log index stored by a majority of the
    /// voters (the leader counts with the entries it has itself persisted), provided that
    /// entry is of the current term (Raft only commits by counting replicas of entries of the
    /// leader's own term). openraft 0.9 does not publish the commit index, so it is derived
    /// from the leader's replication progress.
    ///
    /// `None` on the leader until the first entry of its term (the blank entry it appends on
    /// election) is stored by a majority, and always `None` on followers, candidates, learners
    /// and inactive nodes: openraft 0.9 does not publish the commit index a follower learns
    /// from the leader. There, [`applied_index`](Self::applied_index) is a lower bound of what
    /// is committed. A leader cut off from its quorum keeps its last commit index (it stays in
    /// the [`Role::Leader`] role).
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
    pub(crate) fn from_metrics(m: &Metrics) -> Self {
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
        let commit_index = if role == Role::Leader {
            leader_commit_index(m, &voters)
        } else {
            None
        };
        Self {
            role,
            term: m.current_term,
            leader: m.current_leader.map(id),
            last_log_index: m.last_log_index,
            commit_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters,
            learners,
            peer_lag,
        }
    }
}

/// The leader's commit index from its replication progress: the highest log id matched by a
/// majority of the voters, if it is of the current term. openraft's progress map holds the
/// leader itself too (its entry is what it has persisted); should it be missing, the leader's
/// last log index counts for it.
fn leader_commit_index(m: &Metrics, voters: &BTreeSet<NodeId>) -> Option<u64> {
    if voters.is_empty() {
        return None;
    }
    let replication = m.replication.as_ref()?;
    let me = id(m.id);
    // Per voter: (term, index) of the last entry known to be stored there.
    let mut matched: Vec<Option<(u64, u64)>> = voters
        .iter()
        .map(|voter| match replication.get(&u64::from(*voter)) {
            Some(log) => log.map(|l| (l.leader_id.term, l.index)),
            None if *voter == me => m.last_log_index.map(|index| (m.current_term, index)),
            None => None,
        })
        .collect();
    // Descending: the entry at position `majority - 1` is stored by at least a majority.
    matched.sort_unstable_by(|a, b| b.cmp(a));
    let majority = voters.len() / 2 + 1;
    let (term, index) = matched[majority - 1]?;
    (term == m.current_term).then_some(index)
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
    last: RaftStatus,
    queue: VecDeque<RaftEvent>,
}

impl RaftEvents {
    pub(crate) fn new(rx: watch::Receiver<Metrics>) -> Self {
        let last = RaftStatus::from_metrics(&rx.borrow());
        Self {
            rx,
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
            let now = RaftStatus::from_metrics(&self.rx.borrow_and_update());
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
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::types::{LogId, StoredMembership};

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    /// Node 1 of voters {1, 2, 3} (and learner 4) in term 3, as leader, with the given
    /// replication progress.
    fn leader(progress: &[(u64, Option<LogId>)]) -> Metrics {
        let mut m = Metrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_term = 3;
        m.current_leader = Some(1);
        m.last_log_index = Some(9);
        m.membership_config = Arc::new(StoredMembership::new(
            None,
            Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeSet::from([4])),
        ));
        m.replication = Some(progress.iter().copied().collect());
        m
    }

    #[test]
    fn the_leader_commits_what_a_majority_of_voters_stored() {
        // The leader has 9, node 2 has 7, node 3 has 2: a majority (1 and 2) holds 7.
        let m = leader(&[
            (1, log(3, 9)),
            (2, log(3, 7)),
            (3, log(3, 2)),
            (4, log(3, 9)),
        ]);
        assert_eq!(RaftStatus::from_metrics(&m).commit_index, Some(7));
    }

    #[test]
    fn learners_do_not_count_towards_the_majority() {
        // Only the leader and the learner have anything beyond 2.
        let m = leader(&[(1, log(3, 9)), (2, None), (3, log(3, 2)), (4, log(3, 9))]);
        assert_eq!(RaftStatus::from_metrics(&m).commit_index, Some(2));
    }

    #[test]
    fn nothing_is_committed_while_no_majority_has_an_entry() {
        let m = leader(&[(1, log(3, 9)), (2, None), (3, None)]);
        assert_eq!(RaftStatus::from_metrics(&m).commit_index, None);
    }

    #[test]
    fn entries_of_an_earlier_term_are_not_committed_by_counting() {
        // A majority holds index 5, but of term 2: the leader of term 3 has not committed it.
        let m = leader(&[(1, log(3, 9)), (2, log(2, 5)), (3, log(2, 5))]);
        assert_eq!(RaftStatus::from_metrics(&m).commit_index, None);
    }

    #[test]
    fn a_follower_reports_no_commit_index() {
        let mut m = leader(&[]);
        m.state = ServerState::Follower;
        m.replication = None;
        m.last_applied = log(3, 4);
        let status = RaftStatus::from_metrics(&m);
        assert_eq!(status.commit_index, None);
        assert_eq!(status.applied_index, Some(4));
    }
}
