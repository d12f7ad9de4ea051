//! The local linearizable-read path, shared by the handle and by the RPC service that serves
//! forwarded calls, and the [`Outcome`] of a write or read, which also travels on the wire.
//! (Writes go through the [`Proposer`](crate::proposer::Proposer).)

use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError as OpenraftError};
use openraft::BasicNode;

use crate::codec::{self, Encoded};
use crate::error::RaftError;
use crate::machine::SharedMachine;
use crate::types::{Raft, RaftNodeId};

/// How a write or a linearizable read went on the node that ran it (an rkyv message: the
/// reply to a forwarded call).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum Outcome {
    /// The archived response (write) or answer (read).
    Done(Vec<u8>),
    /// This node is not the leader; the leader it knows of, with its address.
    NotLeader {
        leader: Option<RaftNodeId>,
        addr: Option<String>,
    },
    /// Leadership could not be confirmed by a quorum.
    QuorumUnavailable,
    /// A value could not be decoded.
    Codec(String),
    /// The archived command is larger than a node proposes.
    TooLarge { size: u64, limit: u64 },
    /// Raft has stopped on that node.
    Stopped,
}

impl Outcome {
    /// `NotLeader`, naming the leader openraft pointed to.
    pub(crate) fn not_leader(forward: &ForwardToLeader<RaftNodeId, BasicNode>) -> Self {
        Outcome::NotLeader {
            leader: forward.leader_id,
            addr: forward.leader_node.as_ref().map(|n| n.addr.clone()),
        }
    }

    /// The outcome as the handle reports it (`NotLeader` handled by the caller first).
    pub(crate) fn into_result(self) -> Result<Encoded, RaftError> {
        match self {
            Outcome::Done(bytes) => Ok(Encoded::copy_from(&bytes)),
            Outcome::NotLeader { leader, .. } => Err(RaftError::NotLeader {
                leader: leader.and_then(|id| u32::try_from(id).ok()),
            }),
            Outcome::QuorumUnavailable => Err(RaftError::QuorumUnavailable),
            // Text: the failure happened inside Raft's apply or on another node.
            Outcome::Codec(reason) => Err(RaftError::codec(reason)),
            Outcome::TooLarge { size, limit } => Err(RaftError::CommandTooLarge { size, limit }),
            Outcome::Stopped => Err(RaftError::Stopped),
        }
    }
}

/// Confirms leadership with a quorum, waits until the state machine has applied everything
/// committed before, and answers `query` from it.
pub(crate) async fn read_linearizable_local(
    raft: &Raft,
    machine: &SharedMachine,
    query: Encoded,
) -> Outcome {
    match raft.ensure_linearizable().await {
        Ok(_) => match crate::machine::query(machine, query).await {
            Ok(answer) => Outcome::Done(answer.as_bytes().to_vec()),
            Err(failure) => Outcome::Codec(codec::failure_text(failure)),
        },
        Err(OpenraftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
            Outcome::not_leader(&forward)
        }
        Err(OpenraftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
            Outcome::QuorumUnavailable
        }
        Err(OpenraftError::Fatal(_)) => Outcome::Stopped,
    }
}
