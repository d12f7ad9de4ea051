//! Raft over `datacake-rpc`: one RPC service ([`RaftService`]) on the node carries append,
//! vote and snapshot messages, forwarded writes and reads, and the bootstrap probe; the
//! openraft network ([`Network`]) calls it on peers through the node's channel pool.
//!
//! openraft's messages are serde types: they travel encoded with postcard
//! ([`codec`](crate::codec)) inside small rkyv envelopes. Forwarded writes and reads carry
//! the user's archived command or query as it is, and come back as an rkyv [`Outcome`]; the
//! bootstrap probe is rkyv too.
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
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError as OpenraftError,
    RemoteError, SnapshotMismatch, Unreachable,
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
use crate::codec::{self, Encoded};
use crate::guard::{self, Refusal, SnapshotReceipt, WarnLimiter};
use crate::machine::SharedMachine;
use crate::proposer::Proposer;
use crate::replica::{self, Outcome};
use crate::types::{Raft, RaftNodeId, TypeConfig, Vote};

macro_rules! packets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        pub(crate) struct $name {
            /// The postcard-encoded message.
            pub(crate) payload: Vec<u8>,
        }

        impl Packet for $name {
            fn new(payload: Vec<u8>) -> Self {
                Self { payload }
            }
        }
    )*};
}

/// An rkyv envelope around one postcard-encoded message.
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
    /// The reply to the three above: an [`Answer`].
    ReplyPacket,
);

/// A user command forwarded by a follower to the leader; the reply is an [`Outcome`].
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ForwardWritePacket {
    /// The archived command, as the writer archived it.
    pub(crate) command: Vec<u8>,
}

/// A user query forwarded by a follower to the leader for a linearizable read; the reply is
/// an [`Outcome`].
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ForwardReadPacket {
    /// The archived query.
    pub(crate) query: Vec<u8>,
}

/// The bootstrap question: is this node part of a cluster already?
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ProbePacket {
    /// The prober's `bootstrap_expect`.
    pub(crate) expect: u64,
}

/// The reply to a [`ProbePacket`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ProbeReply {
    /// In a cluster already, or about to initialise one.
    pub(crate) initialized: bool,
    /// The `bootstrap_expect` lowest live ids this node sees (empty if it sees fewer).
    pub(crate) initial: Vec<NodeId>,
}

/// The Raft RPC service on a node.
pub(crate) struct RaftService {
    raft: Raft,
    /// Proposes the writes forwarded to this node.
    proposer: Proposer,
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
        proposer: Proposer,
        machine: SharedMachine,
        node: DatacakeHandle,
        bootstrapping: Arc<AtomicBool>,
        max_snapshot_size: u64,
    ) -> Self {
        Self {
            raft,
            proposer,
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
pub(crate) const SERVICE_NAME: &str = "datacake-raft";

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

/// Why a Raft RPC failed on the node that handled it, as it travels.
///
/// openraft's own `RaftError` would carry a `Fatal` error's `AnyError`, which nests a cause in
/// a cause without bound: decoding one nested a few hundred thousand levels deep would
/// overflow the stack. Text cannot nest.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure<E> {
    /// openraft refused the request (e.g. a snapshot chunk out of place).
    Api(E),
    /// Raft has stopped on that node, or its storage failed.
    Fatal(String),
}

/// The reply to an append, vote or snapshot message.
pub(crate) type Answer<T, E> = Result<T, Failure<E>>;

/// openraft's result as an [`Answer`].
fn answer<T, E>(result: Result<T, OpenraftError<RaftNodeId, E>>) -> Answer<T, E>
where
    E: std::error::Error,
{
    result.map_err(|e| match e {
        OpenraftError::APIError(e) => Failure::Api(e),
        OpenraftError::Fatal(fatal) => Failure::Fatal(fatal.to_string()),
    })
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_payload(e.to_string()))
}

fn reply<T: Serialize>(value: &T) -> Result<ReplyPacket, Status> {
    codec::encode(value)
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
        reply(&answer(self.raft.append_entries(rpc).await))
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
        reply(&answer(self.raft.vote(rpc).await))
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
                        let error = Failure::Api(InstallSnapshotError::SnapshotMismatch(mismatch));
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
        reply(&answer(result))
    }
}

#[datacake_rpc::async_trait]
impl Handler<ForwardWritePacket> for RaftService {
    type Reply = Outcome;

    fn path() -> &'static str {
        "forward-write"
    }

    async fn on_message(&self, request: Request<ForwardWritePacket>) -> Result<Outcome, Status> {
        let command = Encoded::copy_from(&request.command);
        Ok(self.proposer.write(command).await)
    }
}

#[datacake_rpc::async_trait]
impl Handler<ForwardReadPacket> for RaftService {
    type Reply = Outcome;

    fn path() -> &'static str {
        "forward-read"
    }

    async fn on_message(&self, request: Request<ForwardReadPacket>) -> Result<Outcome, Status> {
        let query = Encoded::copy_from(&request.query);
        Ok(replica::read_linearizable_local(&self.raft, &self.machine, query).await)
    }
}

#[datacake_rpc::async_trait]
impl Handler<ProbePacket> for RaftService {
    type Reply = ProbeReply;

    fn path() -> &'static str {
        "probe"
    }

    async fn on_message(&self, request: Request<ProbePacket>) -> Result<ProbeReply, Status> {
        let expect = usize::try_from(request.expect.to_native()).unwrap_or(usize::MAX);
        // A stopped Raft answers "initialized": the cautious answer never starts a cluster.
        let initialized = self.bootstrapping.load(Ordering::SeqCst)
            || self.raft.is_initialized().await.unwrap_or(true);
        let initial = bootstrap::lowest(expect, &self.node.live_members()).unwrap_or_default();
        Ok(ProbeReply {
            initialized,
            initial,
        })
    }
}

/// Sends `message` to the handler of `P` on the node at `addr` and deserialises the rkyv
/// reply.
pub(crate) async fn ask<P, R>(
    network: &RpcNetwork,
    addr: SocketAddr,
    message: &P,
    timeout: Duration,
) -> Result<R, Status>
where
    P: Message,
    R: Message,
    RaftService: Handler<P, Reply = R>,
{
    let mut client = RpcClient::<RaftService>::new(network.get_or_connect(addr));
    client.set_timeout(timeout);
    client.send(message).await?.deserialize_view()
}

/// Calls the handler of `P` on the node at `addr` with `message` (postcard) and decodes the
/// postcard reply.
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
    let payload = codec::encode(message).map_err(|e| Status::invalid_payload(e.to_string()))?;
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
        let result: Result<Answer<Resp, E>, Status> =
            call::<P, _, _>(self.node.network(), addr, message, option.hard_ttl()).await;
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
            Err(status) if status.code == ErrorCode::Connection => {
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(status) => match shrink {
                Some(shrink) if status.code == ErrorCode::PayloadTooLarge => {
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

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
