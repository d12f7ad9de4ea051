//! [`RaftHandle`]: writes, reads, roles, membership and operations of a node's Raft group.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeHandle, NodeId};
use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use openraft::{BasicNode, ChangeMembers};

use crate::codec::{archive, unarchive};
use crate::error::RaftError;
use crate::events::{RaftEvents, RaftStatus, Role};
use crate::machine::{SharedMachine, StateMachine};
use crate::network::{ask, resolve, ForwardReadPacket, ForwardWritePacket};
use crate::replica::{self, Outcome};
use crate::types::{Raft, RaftNodeId};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// Reflects every write committed before the read began: the leader confirms its
    /// leadership with a quorum and waits for its state machine to catch up (on a follower
    /// the read is forwarded to the leader, or fails with `NotLeader`).
    Linearizable,
    /// Reads this node's state machine as it is: fast, possibly stale.
    Local,
}

pub(crate) struct HandleInner {
    pub(crate) raft: Raft,
    pub(crate) machine: SharedMachine,
    pub(crate) node: DatacakeHandle,
    pub(crate) forward: bool,
    pub(crate) rpc_timeout: Duration,
}

/// A node's handle on its Raft group, typed by the state machine `S`. Cheap to clone.
///
/// Made by [`RaftExtension`](crate::RaftExtension); Raft stops when the node shuts down.
pub struct RaftHandle<S> {
    inner: Arc<HandleInner>,
    _machine: PhantomData<fn() -> S>,
}

impl<S> Clone for RaftHandle<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _machine: PhantomData,
        }
    }
}

impl<S> fmt::Debug for RaftHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftHandle")
            .field("node_id", &self.inner.node.me().node_id)
            .field("forward", &self.inner.forward)
            .finish_non_exhaustive()
    }
}

/// Where to forward a call that `outcome` refused: the leader it names.
fn leader_addr(node: &DatacakeHandle, outcome: &Outcome) -> Option<SocketAddr> {
    match outcome {
        Outcome::NotLeader {
            leader: Some(leader),
            addr,
        } => resolve(node, *leader, addr.as_deref()),
        _ => None,
    }
}

fn membership_error(
    e: OpenraftError<RaftNodeId, ClientWriteError<RaftNodeId, BasicNode>>,
) -> RaftError {
    match e {
        OpenraftError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftError::NotLeader {
            leader: f.leader_id.and_then(|id| NodeId::try_from(id).ok()),
        },
        OpenraftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            RaftError::Membership {
                reason: e.to_string(),
            }
        }
        OpenraftError::Fatal(_) => RaftError::Stopped,
    }
}

impl<S: StateMachine> RaftHandle<S> {
    pub(crate) fn new(inner: HandleInner) -> Self {
        Self {
            inner: Arc::new(inner),
            _machine: PhantomData,
        }
    }

    /// Replicates `command` and returns the state machine's response once it is committed
    /// and applied on the leader. On a follower it is forwarded to the leader, or fails with
    /// [`RaftError::NotLeader`] if forwarding is off.
    pub async fn write(&self, command: S::Command) -> Result<S::Response, RaftError> {
        let command = archive(&command).map_err(RaftError::codec)?;
        // Kept for forwarding only when this node turns out not to be the leader.
        let forward = self.inner.forward.then(|| command.clone());
        let outcome = replica::write_local(&self.inner.raft, command).await;
        let outcome = match (leader_addr(&self.inner.node, &outcome), forward) {
            (Some(addr), Some(command)) => {
                let packet = ForwardWritePacket {
                    command: command.as_bytes().to_vec(),
                };
                ask(
                    self.inner.node.network(),
                    addr,
                    &packet,
                    self.inner.rpc_timeout,
                )
                .await?
            }
            _ => outcome,
        };
        unarchive(outcome.into_result()?).map_err(RaftError::codec)
    }

    /// Answers `query` from the state machine with the given consistency.
    pub async fn read(
        &self,
        query: S::Query,
        consistency: ReadConsistency,
    ) -> Result<S::Answer, RaftError> {
        let query = archive(&query).map_err(RaftError::codec)?;
        let answer = match consistency {
            ReadConsistency::Local => self
                .inner
                .machine
                .read()
                .read(query)
                .map_err(RaftError::codec)?,
            ReadConsistency::Linearizable => {
                let forward = self.inner.forward.then(|| query.clone());
                let outcome =
                    replica::read_linearizable_local(&self.inner.raft, &self.inner.machine, query)
                        .await;
                let outcome = match (leader_addr(&self.inner.node, &outcome), forward) {
                    (Some(addr), Some(query)) => {
                        let packet = ForwardReadPacket {
                            query: query.as_bytes().to_vec(),
                        };
                        ask(
                            self.inner.node.network(),
                            addr,
                            &packet,
                            self.inner.rpc_timeout,
                        )
                        .await?
                    }
                    _ => outcome,
                };
                outcome.into_result()?
            }
        };
        unarchive(answer).map_err(RaftError::codec)
    }

    /// The openraft instance, for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node.me().node_id
    }

    /// A snapshot of this node's Raft counters: term, role, leader, log, commit (on the
    /// leader, see [`RaftStatus::commit_index`]) and applied indexes, per-peer lag.
    pub fn metrics(&self) -> RaftStatus {
        RaftStatus::from_metrics(&self.inner.raft.metrics().borrow())
    }

    /// This node's role (a leader that lost its quorum still reports [`Role::Leader`]; see
    /// there).
    pub fn role(&self) -> Role {
        self.metrics().role
    }

    /// `true` if this node is a voter or learner of a running cluster.
    pub fn is_active(&self) -> bool {
        self.role() != Role::Inactive
    }

    /// `true` if this node is in the [`Role::Leader`] role. That is not proof of leadership: a
    /// leader cut off from its quorum stays in the role (openraft 0.9 has no step-down); a
    /// [`Linearizable`](ReadConsistency::Linearizable) read confirms it.
    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.metrics().leader
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.metrics().voters
    }

    /// The learners of the current membership.
    pub fn learners(&self) -> BTreeSet<NodeId> {
        self.metrics().learners
    }

    /// Role, leader and membership changes from now on.
    pub fn events(&self) -> RaftEvents {
        RaftEvents::new(self.inner.raft.metrics())
    }

    /// Asks Raft to take a snapshot now (the log before it is then purged per the policy).
    pub async fn trigger_snapshot(&self) -> Result<(), RaftError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Leader only: adds the live gossip member `node_id` as a learner (it starts receiving
    /// the log; it does not vote). Returns once the change is committed.
    pub async fn add_learner(&self, node_id: NodeId) -> Result<(), RaftError> {
        let member = self
            .inner
            .node
            .live_members()
            .into_iter()
            .find(|m| m.node_id == node_id)
            .ok_or(RaftError::UnknownNode { node_id })?;
        self.inner
            .raft
            .add_learner(
                RaftNodeId::from(node_id),
                BasicNode::new(member.public_addr),
                false,
            )
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Leader only: makes the learner `node_id` a voter.
    pub async fn promote(&self, node_id: NodeId) -> Result<(), RaftError> {
        let ids = BTreeSet::from([RaftNodeId::from(node_id)]);
        self.change(ChangeMembers::AddVoterIds(ids), false).await
    }

    /// Leader only: makes the voter `node_id` a learner.
    pub async fn demote(&self, node_id: NodeId) -> Result<(), RaftError> {
        let ids = BTreeSet::from([RaftNodeId::from(node_id)]);
        self.change(ChangeMembers::RemoveVoters(ids), true).await
    }

    /// Leader only: removes `node_id` (voter or learner) from the group.
    pub async fn remove(&self, node_id: NodeId) -> Result<(), RaftError> {
        let ids = BTreeSet::from([RaftNodeId::from(node_id)]);
        if self.voters().contains(&node_id) {
            self.change(ChangeMembers::RemoveVoters(ids), false).await
        } else {
            self.change(ChangeMembers::RemoveNodes(ids), false).await
        }
    }

    async fn change(
        &self,
        change: ChangeMembers<RaftNodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), RaftError> {
        self.inner
            .raft
            .change_membership(change, retain)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// The replication lag of each peer, on the leader (empty elsewhere).
    pub fn peer_lag(&self) -> BTreeMap<NodeId, u64> {
        self.metrics().peer_lag
    }
}
