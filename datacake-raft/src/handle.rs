//! [`RaftHandle`]: writes, reads, roles, membership and operations of a node's Raft group.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeHandle, ExtensionGuard, NodeId};
use datacake_rpc::Channel;
use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use openraft::{BasicNode, ChangeMembers};

use crate::codec::{archive, unarchive};
use crate::committed::CommitIndex;
use crate::error::RaftError;
use crate::events::{RaftEvents, RaftStatus, Role};
use crate::machine::{SharedMachine, StateMachine};
use crate::network::{
    ask, channel_to, resolve, ForwardReadPacket, ForwardWritePacket, RaftService,
};
use crate::proposer::Proposer;
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
    /// What this node's log store was told is committed.
    pub(crate) commit: Arc<CommitIndex>,
    /// Proposes this node's writes, many to a log entry.
    pub(crate) proposer: Proposer,
    pub(crate) machine: SharedMachine,
    pub(crate) node: DatacakeHandle,
    pub(crate) forward: bool,
    pub(crate) rpc_timeout: Duration,
    /// The deadline of a write or read without one of its own.
    pub(crate) request_timeout: Duration,
    /// How recently a quorum must have acknowledged a leader for it to hold one (the
    /// shortest election timeout: past it, followers may have elected another leader).
    pub(crate) lease: Duration,
    /// Dropped with the last handle: removes the Raft service from the node and stops Raft
    /// on it (see [`RaftHandle`]).
    pub(crate) _guard: ExtensionGuard,
}

/// A node's handle on its Raft group, typed by the state machine `S`. Cheap to clone.
///
/// Made by [`RaftExtension`](crate::RaftExtension). Raft stops on this node when the node
/// shuts down, or when the last clone of its handle is dropped (the rule of every extension,
/// see [`ClusterExtension`](datacake_node::ClusterExtension)): the Raft service leaves the
/// node's server, so peers count this node as unreachable, and openraft shuts down.
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

/// Where to forward a call that `outcome` refused: a channel to the leader it names, if it
/// names one with a known address.
fn leader_channel(node: &DatacakeHandle, outcome: &Outcome) -> Option<Channel> {
    match outcome {
        Outcome::NotLeader {
            leader: Some(leader),
            addr,
        } => resolve(node, *leader, addr.as_deref())
            .map(|addr| channel_to(node.network(), *leader, addr)),
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
    /// [`RaftError::NotLeader`] if forwarding is off. Waits at most the configured request
    /// timeout ([`RaftConfig::with_request_timeout`](crate::RaftConfig::with_request_timeout));
    /// see [`write_within`](Self::write_within).
    pub async fn write(&self, command: S::Command) -> Result<S::Response, RaftError> {
        self.write_within(command, self.inner.request_timeout).await
    }

    /// [`write`](Self::write) with a deadline of its own. Past it the write fails with
    /// [`RaftError::QuorumUnavailable`] if this node leads without a quorum (see
    /// [`has_quorum`](Self::has_quorum)), else [`RaftError::Timeout`]; either way it may
    /// still be committed later (a retry must tolerate that, e.g. a command that is
    /// idempotent or carries its own id).
    pub async fn write_within(
        &self,
        command: S::Command,
        timeout: Duration,
    ) -> Result<S::Response, RaftError> {
        let started = std::time::Instant::now();
        let result = match self.fenced() {
            Ok(()) => self.within(timeout, self.write_once(command)).await,
            Err(superseded) => Err(superseded),
        };
        crate::metrics::record_write(started, &result);
        result
    }

    /// [`read`](Self::read) with a deadline of its own; past it the read fails like a late
    /// [`write_within`](Self::write_within).
    pub async fn read_within(
        &self,
        query: S::Query,
        consistency: ReadConsistency,
        timeout: Duration,
    ) -> Result<S::Answer, RaftError> {
        self.fenced()?;
        match consistency {
            // Reads this node's state machine at once: nothing to wait for, so no timer
            // (it also works outside a runtime, e.g. polled once with `now_or_never`).
            ReadConsistency::Local => self.read_once(query, consistency).await,
            ReadConsistency::Linearizable => {
                self.within(timeout, self.read_once(query, consistency))
                    .await
            }
        }
    }

    /// Fails with [`RaftError::Superseded`] once the cluster lists a newer incarnation of
    /// this node's id: this process's Raft has stopped (or is stopping), and its state is
    /// that of an incarnation the cluster has replaced.
    fn fenced(&self) -> Result<(), RaftError> {
        match self.inner.node.superseded_by() {
            None => Ok(()),
            Some(newer) => Err(RaftError::Superseded {
                node_id: self.inner.node.me().node_id,
                newer,
            }),
        }
    }

    /// Runs `call` for at most `timeout`, naming why it took too long.
    async fn within<T>(
        &self,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<T, RaftError>>,
    ) -> Result<T, RaftError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) if self.is_leader() && !self.has_quorum() => Err(RaftError::QuorumUnavailable),
            Err(_) => Err(RaftError::Timeout { after: timeout }),
        }
    }

    /// `true` if this node is the leader and a quorum of voters acknowledged it within the
    /// lease (the shortest election timeout). A leader cut off from its quorum stays in the
    /// [`Role::Leader`] role (openraft 0.9 has no step-down), but stops holding a quorum one
    /// lease after the last acknowledgement: route writes by this, not by
    /// [`is_leader`](Self::is_leader). Right after an election it is `false` until the first
    /// heartbeat round is acknowledged.
    pub fn has_quorum(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let lease = u64::try_from(self.inner.lease.as_millis()).unwrap_or(u64::MAX);
        metrics.state == openraft::ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|millis| millis < lease)
    }

    /// `outcome`, or, if it refused the call naming a leader and `forward` is set (forwarding
    /// is on), the leader's answer to `forward`.
    async fn or_forwarded<P>(
        &self,
        outcome: Outcome,
        forward: Option<P>,
    ) -> Result<Outcome, RaftError>
    where
        P: datacake_rpc::Message,
        RaftService: datacake_rpc::Handler<P, Reply = Outcome>,
    {
        match (leader_channel(&self.inner.node, &outcome), forward) {
            (Some(leader), Some(packet)) => Ok(ask(leader, &packet, self.inner.rpc_timeout).await?),
            _ => Ok(outcome),
        }
    }

    async fn write_once(&self, command: S::Command) -> Result<S::Response, RaftError> {
        let command = archive(&command).map_err(RaftError::codec)?;
        // Kept for forwarding only when this node turns out not to be the leader.
        let forward = self.inner.forward.then(|| ForwardWritePacket {
            command: command.as_bytes().to_vec(),
        });
        let outcome = self.inner.proposer.write(command).await;
        let outcome = self.or_forwarded(outcome, forward).await?;
        unarchive(outcome.into_result()?).map_err(RaftError::codec)
    }

    /// Answers `query` from the state machine with the given consistency, waiting at most
    /// the configured request timeout (see [`read_within`](Self::read_within)).
    pub async fn read(
        &self,
        query: S::Query,
        consistency: ReadConsistency,
    ) -> Result<S::Answer, RaftError> {
        self.read_within(query, consistency, self.inner.request_timeout)
            .await
    }

    async fn read_once(
        &self,
        query: S::Query,
        consistency: ReadConsistency,
    ) -> Result<S::Answer, RaftError> {
        let query = archive(&query).map_err(RaftError::codec)?;
        let answer = match consistency {
            ReadConsistency::Local => crate::machine::query(&self.inner.machine, query)
                .await
                .map_err(RaftError::codec)?,
            ReadConsistency::Linearizable => {
                let forward = self.inner.forward.then(|| ForwardReadPacket {
                    query: query.as_bytes().to_vec(),
                });
                let outcome =
                    replica::read_linearizable_local(&self.inner.raft, &self.inner.machine, query)
                        .await;
                self.or_forwarded(outcome, forward).await?.into_result()?
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

    /// A snapshot of this node's Raft counters: term, role, leader, log, commit (see
    /// [`RaftStatus::commit_index`]) and applied indexes, per-peer lag.
    pub fn status(&self) -> RaftStatus {
        RaftStatus::from_metrics(&self.inner.raft.metrics().borrow(), &self.inner.commit)
    }

    /// This node's role (a leader that lost its quorum still reports [`Role::Leader`]; see
    /// there).
    pub fn role(&self) -> Role {
        self.status().role
    }

    /// `true` if this node is a voter or learner of a running cluster.
    pub fn is_active(&self) -> bool {
        self.role() != Role::Inactive
    }

    /// `true` if this node is in the [`Role::Leader`] role. That is not proof of leadership: a
    /// leader cut off from its quorum stays in the role (openraft 0.9 has no step-down);
    /// [`has_quorum`](Self::has_quorum) says whether it still holds one, and a
    /// [`Linearizable`](ReadConsistency::Linearizable) read confirms it.
    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.status().leader
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.status().voters
    }

    /// The learners of the current membership.
    pub fn learners(&self) -> BTreeSet<NodeId> {
        self.status().learners
    }

    /// Role, leader and membership changes from now on.
    pub fn events(&self) -> RaftEvents {
        RaftEvents::new(self.inner.raft.metrics(), self.inner.commit.clone())
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
        self.status().peer_lag
    }
}
