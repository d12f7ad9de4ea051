//! Raft over `datacake-rpc`: one RPC service ([`RaftService`]) on the node carries append,
//! vote and snapshot messages, forwarded writes and reads, and the bootstrap probe; the
//! openraft network ([`Network`]) calls it on peers through the node's channel pool.
//!
//! openraft's messages are serde types: they travel as JSON inside small rkyv envelopes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeHandle, NodeId, RpcNetwork};
use datacake_rpc::{
    ErrorCode, Handler, Message, Request, RpcClient, RpcService, ServiceRegistry, Status,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OpenraftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap;
use crate::machine::SharedMachine;
use crate::replica::{self, Outcome};
use crate::types::{Command, Raft, RaftNodeId, TypeConfig};

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
}

impl RaftService {
    pub(crate) fn new(
        raft: Raft,
        machine: SharedMachine,
        node: DatacakeHandle,
        bootstrapping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            raft,
            machine,
            node,
            bootstrapping,
        }
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
        reply(&self.raft.install_snapshot(rpc).await)
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

/// openraft's network: a [`PeerClient`] per target node.
pub(crate) struct Network {
    node: DatacakeHandle,
}

impl Network {
    pub(crate) fn new(node: DatacakeHandle) -> Self {
        Self { node }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            recorded_addr: node.addr.clone(),
            node: self.node.clone(),
        }
    }
}

/// Sends openraft's RPCs to one peer.
pub(crate) struct PeerClient {
    target: RaftNodeId,
    /// The address in the Raft membership; gossip's current one is preferred.
    recorded_addr: String,
    node: DatacakeHandle,
}

type RpcResult<T, E> = Result<T, RPCError<RaftNodeId, BasicNode, OpenraftError<RaftNodeId, E>>>;

impl PeerClient {
    async fn send<P, Req, Resp, E>(&self, message: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        P: Packet,
        RaftService: Handler<P, Reply = ReplyPacket>,
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(addr) = resolve(&self.node, self.target, Some(&self.recorded_addr)) else {
            let status = Status::unavailable(format!("no address for node {}", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&status)));
        };
        let result: Result<Result<Resp, OpenraftError<RaftNodeId, E>>, Status> =
            call::<P, _, _>(self.node.network(), addr, message, option.hard_ttl()).await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(status) if status.code == ErrorCode::Connection => {
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(status) => Err(RPCError::Network(NetworkError::new(&status))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
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
