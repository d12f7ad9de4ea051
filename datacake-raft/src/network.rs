//! Raft over `datacake-rpc`: one RPC service ([`RaftService`]) on the node carries append,
//! vote and snapshot messages, forwarded writes and reads, and the bootstrap probe; the
//! openraft network ([`Network`]) calls it on peers through the node's channel pool.
//!
//! openraft's messages are serde types: they travel as JSON inside small rkyv envelopes.
//!
//! Before a vote, append or snapshot message reaches openraft, the service refuses implausible
//! terms and snapshot chunks that do not continue the snapshot being received (see
//! [`guard`](crate::guard)); the client checks the terms of the responses it gets.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeHandle, NodeId, RpcNetwork};
use datacake_rpc::{
    ErrorCode, Handler, Message, PeerIdentity, Request, RpcClient, RpcService, ServiceRegistry,
    Status,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OpenraftError, RemoteError,
    SnapshotMismatch, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, SnapshotSegmentId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::warn;

use crate::bootstrap;
use crate::guard::{self, Refusal, SnapshotReceipt, WarnLimiter};
use crate::machine::SharedMachine;
use crate::replica::{self, Outcome};
use crate::types::{Command, Raft, RaftNodeId, TypeConfig, Vote};

macro_rules! packets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        pub(crate) struct $name {
            /// The JSON-encoded message.
            pub(crate) payload: Vec<u8>,
        }

        impl Packet for $name {
            fn new(payload: Vec<u8>) -> Self {
                Self { payload }
            }
        }
    )*};
}

/// An rkyv envelope around one JSON-encoded message.
pub(crate) trait Packet: Message {
    fn new(payload: Vec<u8>) -> Self;
}

packets!(
    /// openraft's `AppendEntriesRequest`.
    AppendPacket,
    /// openraft's `VoteRequest`.
    VotePacket,
    /// openraft's `InstallSnapshotRequest` (one chunk).
    SnapshotPacket,
    /// A user command forwarded by a follower to the leader.
    ForwardWritePacket,
    /// A user query forwarded by a follower to the leader for a linearizable read.
    ForwardReadPacket,
    /// The bootstrap question: is this node part of a cluster already?
    ProbePacket,
    /// Every reply.
    ReplyPacket,
);

/// The reply to a [`ProbePacket`] (whose payload is the prober's `bootstrap_expect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeReply {
    /// In a cluster already, or about to initialise one.
    pub(crate) initialized: bool,
    /// The `bootstrap_expect` lowest live ids this node sees (empty if it sees fewer).
    pub(crate) initial: Vec<NodeId>,
}

/// The Raft RPC service on a node.
pub(crate) struct RaftService {
    raft: Raft,
    machine: SharedMachine,
    node: DatacakeHandle,
    bootstrapping: Arc<AtomicBool>,
    /// The snapshot being received; held across openraft's handling of each chunk, so chunks
    /// are checked and handed on one at a time.
    receipt: Mutex<SnapshotReceipt>,
    max_snapshot_size: u64,
    warnings: WarnLimiter,
}

impl RaftService {
    pub(crate) fn new(
        raft: Raft,
        machine: SharedMachine,
        node: DatacakeHandle,
        bootstrapping: Arc<AtomicBool>,
        max_snapshot_size: u64,
    ) -> Self {
        Self {
            raft,
            machine,
            node,
            bootstrapping,
            receipt: Mutex::new(SnapshotReceipt::default()),
            max_snapshot_size,
            warnings: WarnLimiter::default(),
        }
    }

    /// Logs `refusal` of a `kind` message from `peer` (at most once per peer per interval).
    fn warn_refused(&self, peer: IpAddr, claimed: RaftNodeId, kind: &str, refusal: &Refusal) {
        if let Some(suppressed) = self.warnings.admit(peer) {
            warn!(
                node_id = self.node.me().node_id,
                %peer,
                claimed_node = claimed,
                kind,
                suppressed,
                error = %refusal,
                "raft message refused"
            );
        }
    }

    /// Refuses a message whose vote names another sender (the candidate of a vote request,
    /// the leader of an append or a snapshot chunk) than the caller's certificate: with TLS
    /// on, only node N may speak as node N. Without TLS nothing can be proven and the claim
    /// is believed, as before.
    fn check_caller(&self, peer: Option<&PeerIdentity>, vote: &Vote) -> Result<(), Status> {
        match vote.leader_id().voted_for().map(NodeId::try_from) {
            Some(Ok(claimed)) => self.node.verify_caller(peer, claimed),
            // An id no datacake node can have: nothing a certificate could prove.
            _ if peer.is_some() => Err(Status::permission_denied(format!(
                "the message claims sender {:?}, which is no node id",
                vote.leader_id().voted_for()
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a `kind` message from `peer` whose vote has an implausible `term`.
    fn check_term(&self, peer: IpAddr, vote: &Vote, kind: &str) -> Result<(), Status> {
        let current = self.raft.metrics().borrow().current_term;
        guard::check_term(vote.leader_id().term, current).map_err(|refusal| {
            self.warn_refused(
                peer,
                vote.leader_id().voted_for().unwrap_or_default(),
                kind,
                &refusal,
            );
            Status::from(refusal)
        })
    }
}

/// The service name all Raft RPCs are under.
const SERVICE_NAME: &str = "datacake-raft";

impl RpcService for RaftService {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<AppendPacket>();
        registry.add_handler::<VotePacket>();
        registry.add_handler::<SnapshotPacket>();
        registry.add_handler::<ForwardWritePacket>();
        registry.add_handler::<ForwardReadPacket>();
        registry.add_handler::<ProbePacket>();
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(payload).map_err(|e| Status::invalid_payload(e.to_string()))
}

fn reply<T: Serialize>(value: &T) -> Result<ReplyPacket, Status> {
    serde_json::to_vec(value)
        .map(ReplyPacket::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[datacake_rpc::async_trait]
impl Handler<AppendPacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "append"
    }

    async fn on_message(&self, request: Request<AppendPacket>) -> Result<ReplyPacket, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.payload)?;
        self.check_caller(request.peer(), &rpc.vote)?;
        self.check_term(request.remote_addr().ip(), &rpc.vote, "append")?;
        reply(&self.raft.append_entries(rpc).await)
    }
}

#[datacake_rpc::async_trait]
impl Handler<VotePacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "vote"
    }

    async fn on_message(&self, request: Request<VotePacket>) -> Result<ReplyPacket, Status> {
        let rpc: VoteRequest<RaftNodeId> = decode(&request.payload)?;
        self.check_caller(request.peer(), &rpc.vote)?;
        self.check_term(request.remote_addr().ip(), &rpc.vote, "vote")?;
        reply(&self.raft.vote(rpc).await)
    }
}

#[datacake_rpc::async_trait]
impl Handler<SnapshotPacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "snapshot"
    }

    async fn on_message(&self, request: Request<SnapshotPacket>) -> Result<ReplyPacket, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&request.payload)?;
        self.check_caller(request.peer(), &rpc.vote)?;
        let peer = request.remote_addr().ip();
        self.check_term(peer, &rpc.vote, "snapshot")?;

        let mut receipt = self.receipt.lock().await;
        let id = rpc.meta.snapshot_id.clone();
        let end = match receipt.admit(&id, rpc.offset, rpc.data.len(), self.max_snapshot_size) {
            Ok(end) => end,
            Err(refusal) => {
                let claimed = rpc.vote.leader_id().voted_for().unwrap_or_default();
                self.warn_refused(peer, claimed, "snapshot", &refusal);
                return match refusal {
                    // openraft's own answer to a chunk out of place: the leader starts over.
                    Refusal::SnapshotOffset {
                        snapshot_id,
                        expected,
                        got,
                    } => {
                        let mismatch = SnapshotMismatch {
                            expect: SnapshotSegmentId {
                                id: snapshot_id.clone(),
                                offset: expected,
                            },
                            got: SnapshotSegmentId {
                                id: snapshot_id,
                                offset: got,
                            },
                        };
                        let error = OpenraftError::<RaftNodeId, _>::APIError(
                            InstallSnapshotError::SnapshotMismatch(mismatch),
                        );
                        reply(&Err::<InstallSnapshotResponse<RaftNodeId>, _>(error))
                    }
                    refusal => Err(refusal.into()),
                };
            }
        };
        let (vote, done) = (rpc.vote, rpc.done);
        let result = self.raft.install_snapshot(rpc).await;
        // openraft writes the chunk unless its own vote is newer (it answers with that vote).
        let accepted = matches!(&result, Ok(resp) if vote >= resp.vote);
        receipt.record(&id, end, accepted, done);
        reply(&result)
    }
}

#[datacake_rpc::async_trait]
impl Handler<ForwardWritePacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "forward-write"
    }

    async fn on_message(
        &self,
        request: Request<ForwardWritePacket>,
    ) -> Result<ReplyPacket, Status> {
        let command: Command = decode(&request.payload)?;
        reply(&replica::write_local(&self.raft, command).await)
    }
}

#[datacake_rpc::async_trait]
impl Handler<ForwardReadPacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "forward-read"
    }

    async fn on_message(&self, request: Request<ForwardReadPacket>) -> Result<ReplyPacket, Status> {
        let query: String = decode(&request.payload)?;
        let outcome: Outcome =
            replica::read_linearizable_local(&self.raft, &self.machine, &query).await;
        reply(&outcome)
    }
}

#[datacake_rpc::async_trait]
impl Handler<ProbePacket> for RaftService {
    type Reply = ReplyPacket;

    fn path() -> &'static str {
        "probe"
    }

    async fn on_message(&self, request: Request<ProbePacket>) -> Result<ReplyPacket, Status> {
        let expect: usize = decode(&request.payload)?;
        // A stopped Raft answers "initialized": the cautious answer never starts a cluster.
        let initialized = self.bootstrapping.load(Ordering::SeqCst)
            || self.raft.is_initialized().await.unwrap_or(true);
        let initial = bootstrap::lowest(expect, &self.node.live_members()).unwrap_or_default();
        reply(&ProbeReply {
            initialized,
            initial,
        })
    }
}

/// Calls the handler of `P` on the node at `addr` with `message` (JSON) and decodes the JSON
/// reply.
pub(crate) async fn call<P, Req, Resp>(
    network: &RpcNetwork,
    addr: SocketAddr,
    message: &Req,
    timeout: Duration,
) -> Result<Resp, Status>
where
    P: Packet,
    RaftService: Handler<P, Reply = ReplyPacket>,
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let payload =
        serde_json::to_vec(message).map_err(|e| Status::invalid_payload(e.to_string()))?;
    let mut client = RpcClient::<RaftService>::new(network.get_or_connect(addr));
    client.set_timeout(timeout);
    let response = client.send(&P::new(payload)).await?;
    decode(&response.payload)
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
fn unreachable_backoff(max: Duration) -> impl Iterator<Item = Duration> + Send + 'static {
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

impl PeerClient {
    async fn send<P, Req, Resp, E>(&self, message: &Req, option: &RPCOption) -> RpcResult<Resp, E>
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
        let result: Result<Result<Resp, OpenraftError<RaftNodeId, E>>, Status> =
            call::<P, _, _>(self.node.network(), addr, message, option.hard_ttl()).await;
        match result {
            Ok(Ok(resp)) => match resp.term().map(guard::check_response_term) {
                Some(Err(refusal)) => {
                    warn!(target_node = self.target, %addr, error = %refusal, "raft response refused");
                    Err(RPCError::Network(NetworkError::new(&refusal)))
                }
                _ => Ok(resp),
            },
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(status) if status.code == ErrorCode::Connection => {
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(status) => Err(RPCError::Network(NetworkError::new(&status))),
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
        self.send::<AppendPacket, _, _, _>(&rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.send::<SnapshotPacket, _, _, _>(&rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>, openraft::error::Infallible> {
        self.send::<VotePacket, _, _, _>(&rpc, &option).await
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
