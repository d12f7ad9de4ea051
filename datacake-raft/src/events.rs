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
    Leader,
}

/// Counters of one node's Raft state (see [`RaftHandle::metrics`](crate::RaftHandle::metrics)).
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
        Self {
            role,
            term: m.current_term,
            leader: m.current_leader.map(id),
            last_log_index: m.last_log_index,
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
            if now.role != self.last.role {
                self.queue.push_back(RaftEvent::RoleChanged(now.role));
            }
            if now.leader != self.last.leader {
                self.queue.push_back(RaftEvent::LeaderChanged(now.leader));
            }
            if now.voters != self.last.voters || now.learners != self.last.learners {
                self.queue.push_back(RaftEvent::MembershipChanged {
                    voters: now.voters.clone(),
                    learners: now.learners.clone(),
                });
            }
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
