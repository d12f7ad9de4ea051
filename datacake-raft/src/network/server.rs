//! The Raft RPC service on a node ([`RaftService`]) and its handlers.
//!
//! Every handler has the same shape, written once: the `handler!` macro states a packet,
//! its path and reply, and the body; an append, vote or snapshot message is decoded and
//! checked by [`RaftService::admit`] (the sender the certificate proves, a plausible term)
//! before openraft sees it, and openraft's result travels back as an [`Answer`] ([`answer`],
//! [`reply`]). Only the snapshot handler does more: it also refuses chunks that do not
//! continue the snapshot being received, or would take it past the size limit.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datacake_node::{DatacakeHandle, NodeId};
use datacake_rpc::{Handler, PeerIdentity, Request, RpcService, ServiceRegistry, Status};
use openraft::error::{InstallSnapshotError, RaftError as OpenraftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
};
use openraft::SnapshotSegmentId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::warn;

use super::{
    decode, Answer, AppendPacket, EarlyPacket, Failure, ForwardReadPacket, ForwardWritePacket,
    ProbePacket, ProbeReply, ReplyPacket, SnapshotPacket, VotePacket, SERVICE_NAME,
};
use crate::bootstrap;
use crate::codec::{self, Encoded};
use crate::guard::{self, Refusal, SnapshotReceipt, WarnLimiter};
use crate::machine::SharedMachine;
use crate::proposer::Proposer;
use crate::replica::{self, Outcome};
use crate::sqlite_log::WeakLogStore;
use crate::types::{LogId, Raft, RaftNodeId, TypeConfig, Vote};

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
    /// The durable log, which takes leaders' early copies (none in memory). Weak: the
    /// service may outlive openraft, which owns the log.
    log: Option<WeakLogStore>,
}

/// An openraft request that names its sender and term in a vote: an append, a vote request
/// or a snapshot chunk.
trait Inbound: DeserializeOwned {
    /// The kind of message, as logged when one is refused.
    const KIND: &'static str;

    /// The vote the message is sent under.
    fn vote(&self) -> &Vote;

    /// Refuses an encoded message whose decoding would cost far more memory than its bytes
    /// (checked before it is decoded).
    fn check_encoded(_payload: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

impl Inbound for AppendEntriesRequest<TypeConfig> {
    const KIND: &'static str = "append";

    fn vote(&self) -> &Vote {
        &self.vote
    }

    fn check_encoded(payload: &[u8]) -> Result<(), Status> {
        check_entry_count(payload)
    }
}

/// The most entries an append message may carry: openraft sends at most
/// [`MAX_PAYLOAD_ENTRIES`](crate::proposer::MAX_PAYLOAD_ENTRIES), and the rest is room for a
/// peer configured otherwise. Counted before the message is decoded: a blank entry is about
/// 3 bytes on the wire and 70 in memory, so a 64 MiB message of them would take gigabytes.
pub(super) const MAX_APPEND_ENTRIES: u64 = 1024;

/// Refuses an encoded append message that announces more than [`MAX_APPEND_ENTRIES`].
pub(super) fn check_entry_count(payload: &[u8]) -> Result<(), Status> {
    // postcard writes the fields in order: the vote, the previous log id, then the number of
    // entries (a varint).
    let count = postcard::take_from_bytes::<(Vote, Option<LogId>)>(payload)
        .and_then(|(_, rest)| postcard::take_from_bytes::<u64>(rest))
        .map(|(count, _)| count)
        .map_err(|e| Status::invalid_payload(format!("malformed append message: {e}")))?;
    if count > MAX_APPEND_ENTRIES {
        return Err(Status::invalid_payload(format!(
            "an append message of {count} entries (at most {MAX_APPEND_ENTRIES})"
        )));
    }
    Ok(())
}

impl Inbound for VoteRequest<RaftNodeId> {
    const KIND: &'static str = "vote";

    fn vote(&self) -> &Vote {
        &self.vote
    }
}

impl Inbound for InstallSnapshotRequest<TypeConfig> {
    const KIND: &'static str = "snapshot";

    fn vote(&self) -> &Vote {
        &self.vote
    }
}

impl RaftService {
    pub(crate) fn new(
        raft: Raft,
        proposer: Proposer,
        machine: SharedMachine,
        node: DatacakeHandle,
        bootstrapping: Arc<AtomicBool>,
        max_snapshot_size: u64,
        log: Option<WeakLogStore>,
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
            log,
        }
    }

    /// Decodes the message in `payload`, which `caller` (its certificate, if any) sent from
    /// `peer` as incarnation `generation`, and refuses it if its vote names another sender
    /// than the certificate proves ([`check_caller`](Self::check_caller)), the sender is an
    /// incarnation the cluster has replaced ([`check_incarnation`](Self::check_incarnation))
    /// or its term is implausible ([`check_term`](Self::check_term)).
    fn admit<M: Inbound>(
        &self,
        payload: &[u8],
        generation: u64,
        caller: Option<&PeerIdentity>,
        peer: IpAddr,
    ) -> Result<M, Status> {
        M::check_encoded(payload)?;
        let rpc: M = decode(payload)?;
        self.check_caller(caller, rpc.vote())?;
        self.check_incarnation(peer, rpc.vote(), generation, M::KIND)?;
        self.check_term(peer, rpc.vote(), M::KIND)?;
        Ok(rpc)
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

    /// Refuses a `kind` message from `peer` whose sender (the vote's candidate or leader) is
    /// incarnation `generation` of its id while the cluster lists a newer one: a process that
    /// stalled until held dead and was started again elsewhere, and has not yet heard so
    /// (its own Raft stops once it does). Its vote and log are not the restart's, so one id
    /// would vote twice in a term. (Both processes hold the id's certificate; the generation
    /// tells them apart. It is the sender's claim, which fences off stale processes, not
    /// impostors.)
    fn check_incarnation(
        &self,
        peer: IpAddr,
        vote: &Vote,
        generation: u64,
        kind: &str,
    ) -> Result<(), Status> {
        let Some(Ok(sender)) = vote.leader_id().voted_for().map(NodeId::try_from) else {
            return Ok(());
        };
        let Some(newer) = self.node.replaced_by(sender, generation) else {
            return Ok(());
        };
        let refusal = Refusal::Replaced {
            node: sender,
            generation,
            newer,
        };
        self.warn_refused(peer, u64::from(sender), kind, &refusal);
        Err(Status::from(refusal))
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

    /// Hands an admitted snapshot chunk from `peer` to openraft if it continues the snapshot
    /// being received and keeps it within the size limit; a chunk out of place is answered
    /// as openraft would (the leader starts over), any other refusal is an error.
    async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        peer: IpAddr,
    ) -> Result<ReplyPacket, Status> {
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

impl RpcService for RaftService {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<AppendPacket>();
        registry.add_handler::<VotePacket>();
        registry.add_handler::<SnapshotPacket>();
        registry.add_handler::<EarlyPacket>();
        registry.add_handler::<ForwardWritePacket>();
        registry.add_handler::<ForwardReadPacket>();
        registry.add_handler::<ProbePacket>();
    }
}

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

/// `value` encoded with postcard, as the reply to an append, vote or snapshot message.
fn reply<T: Serialize>(value: &T) -> Result<ReplyPacket, Status> {
    codec::encode(value)
        .map(|payload| ReplyPacket { payload })
        .map_err(|e| Status::internal(e.to_string()))
}

/// Implements `Handler<$packet>` for [`RaftService`] at `$path`, replying `$reply`: `$body`
/// runs with the service bound to `$service` and the `Request<$packet>` to `$request`.
macro_rules! handler {
    ($packet:ty => $reply:ty, $path:literal, |$service:ident, $request:ident| $body:block) => {
        #[datacake_rpc::async_trait]
        impl Handler<$packet> for RaftService {
            type Reply = $reply;

            fn path() -> &'static str {
                $path
            }

            async fn on_message(&self, $request: Request<$packet>) -> Result<$reply, Status> {
                let $service = self;
                $body
            }
        }
    };
}

handler!(AppendPacket => ReplyPacket, "append", |service, request| {
    let peer = request.remote_addr().ip();
    let generation = request.generation.to_native();
    let rpc: AppendEntriesRequest<TypeConfig> =
        service.admit(&request.payload, generation, request.peer(), peer)?;
    reply(&answer(service.raft.append_entries(rpc).await))
});

handler!(EarlyPacket => ReplyPacket, "early-append", |service, request| {
    let peer = request.remote_addr().ip();
    let generation = request.generation.to_native();
    let rpc: AppendEntriesRequest<TypeConfig> =
        service.admit(&request.payload, generation, request.peer(), peer)?;
    let me = RaftNodeId::from(service.node.me().node_id);
    let taken = match service.log.as_ref().and_then(WeakLogStore::upgrade) {
        // Only a leader's own append brings its entries into its log.
        Some(log) if rpc.vote.leader_id().voted_for() != Some(me) => log
            .write_early(&rpc.vote, rpc.prev_log_id, rpc.entries)
            .map_err(|e| Status::internal(e.to_string()))?,
        _ => false,
    };
    crate::metrics::record_early_copy(taken);
    reply(&taken)
});

handler!(VotePacket => ReplyPacket, "vote", |service, request| {
    let peer = request.remote_addr().ip();
    let generation = request.generation.to_native();
    let rpc: VoteRequest<RaftNodeId> =
        service.admit(&request.payload, generation, request.peer(), peer)?;
    reply(&answer(service.raft.vote(rpc).await))
});

handler!(SnapshotPacket => ReplyPacket, "snapshot", |service, request| {
    let peer = request.remote_addr().ip();
    let generation = request.generation.to_native();
    let rpc: InstallSnapshotRequest<TypeConfig> =
        service.admit(&request.payload, generation, request.peer(), peer)?;
    service.install_snapshot(rpc, peer).await
});

handler!(ForwardWritePacket => Outcome, "forward-write", |service, request| {
    let command = Encoded::copy_from(&request.command);
    Ok(service.proposer.write(command).await)
});

handler!(ForwardReadPacket => Outcome, "forward-read", |service, request| {
    let query = Encoded::copy_from(&request.query);
    Ok(replica::read_linearizable_local(&service.raft, &service.machine, query).await)
});

handler!(ProbePacket => ProbeReply, "probe", |service, request| {
    let expect = usize::try_from(request.expect.to_native()).unwrap_or(usize::MAX);
    // A stopped Raft answers "initialized": the cautious answer never starts a cluster.
    let initialized = service.bootstrapping.load(Ordering::SeqCst)
        || service.raft.is_initialized().await.unwrap_or(true);
    let initial = bootstrap::lowest(expect, &service.node.live_members()).unwrap_or_default();
    Ok(ProbeReply {
        initialized,
        initial,
    })
});
