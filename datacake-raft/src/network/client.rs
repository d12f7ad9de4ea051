//! The client side of Raft over `datacake-rpc`: calling the [`RaftService`] of a peer
//! ([`ask`] for rkyv messages, [`call`] for openraft's postcard ones), finding the peer
//! ([`resolve`]), and openraft's network ([`Network`], a [`PeerClient`] per peer), which
//! checks the terms of the responses it gets and backs off from an unreachable peer.

use std::net::SocketAddr;
use std::time::Duration;

use datacake_node::{DatacakeHandle, NodeId, RpcNetwork};
use datacake_rpc::{Channel, ErrorCode, Handler, Message, RpcClient, Status};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError as OpenraftError,
    RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use super::{
    decode, Answer, AppendPacket, Failure, Packet, RaftService, ReplyPacket, SnapshotPacket,
    VotePacket,
};
use crate::codec;
use crate::guard;
use crate::types::{RaftNodeId, TypeConfig};

/// Sends `message` to the handler of `P` over `channel` and deserialises the rkyv reply.
pub(crate) async fn ask<P, R>(channel: Channel, message: &P, timeout: Duration) -> Result<R, Status>
where
    P: Message,
    R: Message,
    RaftService: Handler<P, Reply = R>,
{
    let mut client = RpcClient::<RaftService>::new(channel);
    client.set_timeout(timeout);
    client.send(message).await?.deserialize_view()
}

/// Calls the handler of `P` over `channel` with `message` (postcard), sent by this node's
/// incarnation `generation`, and decodes the postcard reply.
pub(crate) async fn call<P, Req, Resp>(
    channel: Channel,
    generation: u64,
    message: &Req,
    timeout: Duration,
) -> Result<Resp, Status>
where
    P: Packet,
    RaftService: Handler<P, Reply = ReplyPacket>,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let payload = codec::encode(message).map_err(|e| Status::invalid_payload(e.to_string()))?;
    let mut client = RpcClient::<RaftService>::new(channel);
    client.set_timeout(timeout);
    let response = client.send(&P::new(generation, payload)).await?;
    decode(&response.payload)
}

/// The channel to Raft node `id` at `addr`: with TLS, one that reaches only that node (see
/// [`RpcNetwork::get_or_connect_node`]).
pub(crate) fn channel_to(network: &RpcNetwork, id: RaftNodeId, addr: SocketAddr) -> Channel {
    match NodeId::try_from(id) {
        Ok(id) => network.get_or_connect_node(id, addr),
        // Raft ids are datacake node ids: one out of range (a peer's claim) has no
        // certificate to require, so only the cluster is checked.
        Err(_) => network.get_or_connect(addr),
    }
}

/// Where node `id` is reached: its address in gossip (current even after a restart on a new
/// port), else the address recorded in the Raft membership (`fallback`).
pub(crate) fn resolve(
    node: &DatacakeHandle,
    id: RaftNodeId,
    fallback: Option<&str>,
) -> Option<SocketAddr> {
    let gossiped = NodeId::try_from(id).ok().and_then(|id| {
        node.live_members()
            .into_iter()
            .find(|m| m.node_id == id)
            .map(|m| m.public_addr)
    });
    gossiped.or_else(|| fallback.and_then(|addr| addr.parse().ok()))
}

/// The first wait after a peer was found unreachable: openraft's own constant backoff.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The waits between replication attempts to a peer that stays unreachable: from
/// [`FIRST_BACKOFF`], doubling, up to `max` (never below [`FIRST_BACKOFF`]).
pub(super) fn unreachable_backoff(
    max: Duration,
) -> impl Iterator<Item = Duration> + Send + 'static {
    let max = max.max(FIRST_BACKOFF);
    std::iter::successors(Some(FIRST_BACKOFF), move |wait| Some((*wait * 2).min(max)))
}

/// openraft's network: a [`PeerClient`] per target node.
pub(crate) struct Network {
    node: DatacakeHandle,
    backoff_max: Duration,
}

impl Network {
    /// The network of a node whose shortest election timeout is `election_timeout_min`.
    ///
    /// openraft logs every failed replication attempt at error level (`RPCError`, target
    /// `openraft::replication`) and retries an unreachable peer after each wait of
    /// [`RaftNetwork::backoff`]; its default waits 500 ms, so a dead peer costs two error
    /// lines a second for as long as it is down. Our backoff doubles up to 3/4 of the shortest
    /// election timeout: a peer that comes back must hear from the leader before its own
    /// election timer fires, or its election will unseat the leader.
    pub(crate) fn new(node: DatacakeHandle, election_timeout_min: Duration) -> Self {
        Self {
            node,
            backoff_max: election_timeout_min * 3 / 4,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            recorded_addr: node.addr.clone(),
            node: self.node.clone(),
            backoff_max: self.backoff_max,
        }
    }
}

/// Sends openraft's RPCs to one peer.
pub(crate) struct PeerClient {
    target: RaftNodeId,
    /// The address in the Raft membership; gossip's current one is preferred.
    recorded_addr: String,
    node: DatacakeHandle,
    backoff_max: Duration,
}

/// A response that carries the responder's vote, whose term openraft may adopt.
trait CarriesVote {
    /// The term of the carried vote, if any.
    fn term(&self) -> Option<u64>;
}

impl CarriesVote for VoteResponse<RaftNodeId> {
    fn term(&self) -> Option<u64> {
        Some(self.vote.leader_id().term)
    }
}

impl CarriesVote for AppendEntriesResponse<RaftNodeId> {
    fn term(&self) -> Option<u64> {
        match self {
            AppendEntriesResponse::HigherVote(vote) => Some(vote.leader_id().term),
            _ => None,
        }
    }
}

impl CarriesVote for InstallSnapshotResponse<RaftNodeId> {
    fn term(&self) -> Option<u64> {
        Some(self.vote.leader_id().term)
    }
}

type RpcResult<T, E> = Result<T, RPCError<RaftNodeId, BasicNode, OpenraftError<RaftNodeId, E>>>;

/// A fatal error on the node that handled an RPC, as a network error here.
#[derive(Debug, thiserror::Error)]
#[error("raft failed on node {node}: {reason}")]
struct RemoteFatal {
    node: RaftNodeId,
    reason: String,
}

impl PeerClient {
    /// Sends `message` to the peer. `shrink` is what to tell openraft if the peer refuses the
    /// message as too large (append-entries: send fewer entries); without it, a refusal is a
    /// network error.
    async fn send<P, Req, Resp, E>(
        &self,
        message: &Req,
        option: &RPCOption,
        shrink: Option<PayloadTooLarge>,
    ) -> RpcResult<Resp, E>
    where
        P: Packet,
        RaftService: Handler<P, Reply = ReplyPacket>,
        Req: Serialize,
        Resp: DeserializeOwned + CarriesVote,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(addr) = resolve(&self.node, self.target, Some(&self.recorded_addr)) else {
            let status = Status::unavailable(format!("no address for node {}", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&status)));
        };
        let result: Result<Answer<Resp, E>, Status> = call::<P, _, _>(
            channel_to(self.node.network(), self.target, addr),
            self.node.generation(),
            message,
            option.hard_ttl(),
        )
        .await;
        match result {
            Ok(Ok(resp)) => match resp.term().map(guard::check_response_term) {
                Some(Err(refusal)) => {
                    warn!(target_node = self.target, %addr, error = %refusal, "raft response refused");
                    Err(RPCError::Network(NetworkError::new(&refusal)))
                }
                _ => Ok(resp),
            },
            Ok(Err(Failure::Api(refused))) => Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                OpenraftError::APIError(refused),
            ))),
            // openraft treats a remote error and a network error alike: no retry at once.
            Ok(Err(Failure::Fatal(reason))) => {
                Err(RPCError::Network(NetworkError::new(&RemoteFatal {
                    node: self.target,
                    reason,
                })))
            }
            Err(status) if status.code() == ErrorCode::Connection => {
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(status) => match shrink {
                Some(shrink) if status.code() == ErrorCode::PayloadTooLarge => {
                    warn!(target_node = self.target, %addr, error = %status, "raft message too large: sending less");
                    Err(RPCError::PayloadTooLarge(shrink))
                }
                _ => Err(RPCError::Network(NetworkError::new(&status))),
            },
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(unreachable_backoff(self.backoff_max))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>, openraft::error::Infallible> {
        // A peer whose RPC server takes less than the entries' bytes (see
        // `proposer::MAX_PAYLOAD_ENTRIES`) is sent half as many next time, down to one.
        let half = (rpc.entries.len() as u64 / 2).max(1);
        let shrink = PayloadTooLarge::new_entries_hint(half);
        self.send::<AppendPacket, _, _, _>(&rpc, &option, Some(shrink))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.send::<SnapshotPacket, _, _, _>(&rpc, &option, None)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>, openraft::error::Infallible> {
        self.send::<VotePacket, _, _, _>(&rpc, &option, None).await
    }
}
