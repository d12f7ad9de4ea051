//! chitchat's [`Transport`] over datacake-rpc: gossip rides the node's own RPC server, so a
//! node has one address for everything.
//!
//! - Receiving: the [`GossipService`] handler refuses a payload larger than a datagram and
//!   pushes the packet into a bounded queue (dropping when full: gossip is lossy by design,
//!   and a flood must not grow memory); a decode task checks the bytes ([`gossip_check`]: a
//!   delta's shape and decompressed size, which chitchat trusts) and turns them into
//!   envelopes that wait in a second bounded queue until [`Socket::recv`] hands them to
//!   chitchat. At most [`PER_SENDER`] packets of one sender are held across both queues
//!   ([`FairInbox`]), so one peer's flood cannot crowd out the others' heartbeats, and
//!   decoded messages wait within a byte bound ([`MAX_DECODED_BYTES`]). A SYN's or
//!   SYN-ACK's digest that lists more new nodes than chitchat's table has room for
//!   ([`gossip_check::DigestBound`]) loses those before it is decoded, and is checked again
//!   as chitchat takes it (one that no longer fits, as others took the room meanwhile, is
//!   dropped, and a call carrying it refused with `ResourceExhausted`).
//! - Sending: [`Socket::send`] encodes the envelope and spawns the RPC call to the peer over
//!   the pooled channel, fire-and-forget, so a slow or dead peer never blocks the gossip loop.
//!   To a live member's address it uses the member's channel
//!   ([`RpcNetwork::get_or_connect_node`]: with TLS, only that member is accepted there), so
//!   gossip and the extensions' calls share one connection per peer.
//! - Replies travel back on the caller's own call. chitchat answers a SYN with a SYN-ACK (or
//!   `BadCluster`) addressed to the sender's *claimed* address; the transport instead hands
//!   it to the call that carried the SYN, whose response takes it back. So a packet that
//!   claims someone else's address never makes this node call that address (no reflection,
//!   no amplification: a SYN-ACK is far larger than a SYN), and a SYN-ACK or `BadCluster` is
//!   only taken as the response to this node's own SYN, never as a call of its own. The ACK
//!   that completes a round is a new call to the address this node chose to gossip with.
//!
//! chitchat 0.13 does not expose its envelope codec (`ChitchatEnvelope::serialize` and
//! `deserialize` are crate-private), and we do not fork it. Its public `UdpSocket` *does*
//! encode and decode, so the codec is reached through a pair of loopback UDP sockets per
//! direction ([`Encoder`], [`Decoder`]): the bytes never leave the host, the wire format stays
//! chitchat's own, and the RPC carries them between nodes.
//!
//! On turmoil's simulated network (`DatacakeNodeBuilder::with_simulated_network`, feature
//! `simulation`) only the RPC is simulated: the loopback codec sockets stay real tokio UDP
//! sockets. They work inside turmoil hosts as long as the simulation enables tokio's I/O
//! driver (`turmoil::Builder::enable_tokio_io`); loopback delivery is immediate, so the codec
//! does not depend on simulated time, and partitions act on the RPC between hosts.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::{
    Chitchat, ChitchatEnvelope, ChitchatId, ChitchatMessage, NodeState, ProtocolVersion,
};
use datacake_rpc::{Handler, Request, RpcClient, RpcService, ServiceRegistry, Status};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, warn};

use crate::auth::PeerAuth;
use crate::gossip_check::{self, DigestBound};
use crate::membership::{MembershipView, NodeId};
use crate::metrics::gossip_refused;
use crate::network::RpcNetwork;

/// How many received gossip messages may wait to be decoded before new ones are dropped; as
/// many decoded ones may wait for the gossip loop.
const INBOX_CAPACITY: usize = 1024;
/// How many messages of one sender (a node id: proven by its certificate with TLS, claimed on
/// plaintext) may wait in both queues together, until the gossip loop takes them. A member
/// sends a few per gossip round.
const PER_SENDER: usize = 64;
/// Most bytes of gossip the decoded messages waiting for chitchat may stand for, all senders
/// together: each counts its bytes plus what its compressed streams decompress to
/// ([`gossip_check::Checked::decoded_len`]). A message decompresses to as much as 1 MiB, and
/// chitchat's decoded form of a delta of many small key/values takes several times its
/// bytes, so the queue's 1,024 places alone bounded it at gigabytes. Real gossip is a few KB
/// to a few hundred KB per message and leaves the queue as fast as it arrives.
const MAX_DECODED_BYTES: usize = 8 << 20;
/// How long one loopback encode/decode step may take before the relay is rebuilt.
const CODEC_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest datagram the loopback codec carries (chitchat's own limit is 65,507 bytes).
const MAX_DATAGRAM: usize = 65_536;
/// Largest gossip payload a call may carry: chitchat writes every message into one UDP
/// datagram.
const MAX_PAYLOAD: usize = gossip_check::MAX_MESSAGE;

/// A received packet waiting to be decoded.
pub(crate) struct Inbound {
    /// The sender's public address (as it claims it).
    from: SocketAddr,
    bytes: Vec<u8>,
    /// `Some` for a packet a peer's call carried (the call waits for the [`Answer`]); `None`
    /// for the reply to this node's own SYN, which came back in the response.
    answer: Option<oneshot::Sender<Answer>>,
    /// The sender's place in the [`FairInbox`], held until chitchat takes the decoded packet
    /// (or the packet is dropped).
    place: Option<InboxPlace>,
}

/// A decoded packet waiting for chitchat ([`RpcSocket::recv`]).
struct Decoded {
    outcome: RecvOutcome,
    /// The nodes its digest lists (see [`gossip_check::DigestBound`]).
    listed: Vec<ChitchatId>,
    /// A SYN whose call waits for chitchat's reply.
    call_waits: bool,
    /// The sender's place in the [`FairInbox`], given back when chitchat takes the packet.
    _place: Option<InboxPlace>,
    /// Its share of [`MAX_DECODED_BYTES`], given back likewise.
    _share: BudgetShare,
}

/// The bytes of gossip the decoded queue stands for (see [`MAX_DECODED_BYTES`]).
#[derive(Default)]
struct DecodedBudget(Arc<AtomicUsize>);

impl DecodedBudget {
    /// A share of `bytes`, if that many are left.
    fn take(&self, bytes: usize) -> Option<BudgetShare> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= MAX_DECODED_BYTES)
            })
            .ok()?;
        Some(BudgetShare {
            budget: self.0.clone(),
            bytes,
        })
    }
}

/// A decoded message's share of the [`DecodedBudget`], given back when dropped.
struct BudgetShare {
    budget: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The gossip service's end of the inbox: at most [`PER_SENDER`] packets of one sender wait
/// at a time, in the inbox and, decoded, in the queue chitchat reads.
pub(crate) struct FairInbox {
    queue: mpsc::Sender<Inbound>,
    waiting: Arc<Mutex<HashMap<NodeId, usize>>>,
}

impl FairInbox {
    pub(crate) fn new(queue: mpsc::Sender<Inbound>) -> Self {
        Self {
            queue,
            waiting: Arc::default(),
        }
    }

    /// Queues `packet` from `sender`; `false` if the sender has its share waiting already,
    /// or the queue is full or closed.
    fn push(&self, sender: NodeId, mut packet: Inbound) -> bool {
        {
            let mut waiting = self.waiting.lock();
            let count = waiting.entry(sender).or_default();
            if *count >= PER_SENDER {
                return false;
            }
            *count += 1;
        }
        packet.place = Some(InboxPlace {
            waiting: self.waiting.clone(),
            sender,
        });
        // On failure the packet, and with it the place, is dropped.
        self.queue.try_send(packet).is_ok()
    }
}

/// One sender's place in the [`FairInbox`], held by a packet until chitchat takes it.
struct InboxPlace {
    waiting: Arc<Mutex<HashMap<NodeId, usize>>>,
    sender: NodeId,
}

impl Drop for InboxPlace {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock();
        if let Some(count) = waiting.get_mut(&self.sender) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.sender);
            }
        }
    }
}

/// What a call carrying a gossip packet gets back.
#[derive(Debug)]
enum Answer {
    /// chitchat's reply (to a SYN).
    Reply(Vec<u8>),
    /// Nothing to reply (to an ACK).
    Nothing,
    /// The packet is not one a peer may send as a call.
    Refused(&'static str),
    /// Its digest lists more new nodes than this node's gossip table has room for.
    TableFull,
}

/// How many SYNs may wait for chitchat's reply at once (their calls wait meanwhile).
const MAX_WAITING_REPLIES: usize = 2 * INBOX_CAPACITY;

/// One gossip message between nodes: chitchat's encoded envelope plus the public address of
/// the sender (the address chitchat knows it by, and replies to).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct GossipPacket {
    /// The sender's node id: with TLS, its certificate must name it.
    pub(crate) node_id: NodeId,
    /// The sender's public address, e.g. `"10.0.0.7:8000"`.
    pub(crate) from: String,
    /// chitchat's encoded envelope.
    pub(crate) payload: Vec<u8>,
}

/// The response to a [`GossipPacket`]: chitchat's encoded reply, empty if there is none.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct GossipAck {
    pub(crate) reply: Vec<u8>,
}

/// The RPC service every node runs to receive gossip.
pub(crate) struct GossipService {
    inbox: FairInbox,
    auth: Arc<PeerAuth>,
    /// How long a call waits for chitchat's reply before it returns without one.
    answer_timeout: Duration,
}

impl GossipService {
    pub(crate) fn new(
        inbox: mpsc::Sender<Inbound>,
        auth: Arc<PeerAuth>,
        answer_timeout: Duration,
    ) -> Self {
        Self {
            inbox: FairInbox::new(inbox),
            auth,
            answer_timeout,
        }
    }
}

impl RpcService for GossipService {
    fn service_name() -> &'static str {
        "datacake.gossip"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<GossipPacket>();
    }
}

#[async_trait]
impl Handler<GossipPacket> for GossipService {
    type Reply = GossipAck;

    fn path() -> &'static str {
        "packet"
    }

    async fn on_message(&self, request: Request<GossipPacket>) -> Result<GossipAck, Status> {
        // datacake-rpc has no per-handler body limit: the server read the body up to its
        // `max_body_size` already, but a larger payload is not copied or queued.
        let len = request.payload.len();
        if len > MAX_PAYLOAD {
            return Err(Status::payload_too_large(len, MAX_PAYLOAD));
        }
        let from: SocketAddr = request
            .from
            .as_str()
            .parse()
            .map_err(|_| Status::invalid_payload("gossip sender address does not parse"))?;
        let node_id = request.node_id.to_native();
        self.auth.verify(request.peer(), node_id)?;
        self.auth.prove_address(node_id, from);
        let (answer_tx, answer_rx) = oneshot::channel();
        let packet = Inbound {
            from,
            bytes: request.payload.as_slice().to_vec(),
            answer: Some(answer_tx),
            place: None,
        };
        let no_reply = GossipAck { reply: Vec::new() };
        if !self.inbox.push(node_id, packet) {
            debug!(peer=%from, node_id, "gossip inbox full (for this sender) or closed: message dropped");
            gossip_refused("queue_full");
            return Ok(no_reply);
        }
        match timeout(self.answer_timeout, answer_rx).await {
            Ok(Ok(Answer::Reply(reply))) => Ok(GossipAck { reply }),
            Ok(Ok(Answer::Refused(reason))) => Err(Status::invalid_payload(reason)),
            Ok(Ok(Answer::TableFull)) => Err(Status::resource_exhausted(
                "the gossip lists more nodes than this node's gossip table has room for",
            )),
            // An ACK, or chitchat did not answer in time (the round is lost, as a dropped
            // datagram would be).
            Ok(Ok(Answer::Nothing)) | Ok(Err(_)) | Err(_) => Ok(no_reply),
        }
    }
}

/// What the node keeps of its gossip transport: where it sends from and what is in flight.
pub(crate) struct GossipShared {
    node_id: NodeId,
    public_addr: SocketAddr,
    network: RpcNetwork,
    send_timeout: Duration,
    in_flight: AtomicUsize,
    /// Where replies to our own SYNs go: the decode loop's queue.
    inbox: mpsc::Sender<Inbound>,
    /// Calls waiting for chitchat's reply to the SYN they carried.
    waiting: Mutex<WaitingReplies>,
    /// The node's membership view, once the node runs (to tell which member an address is).
    members: std::sync::OnceLock<watch::Receiver<Arc<MembershipView>>>,
    /// chitchat's state, once it runs (what a digest is checked against).
    table: watch::Sender<Option<Arc<tokio::sync::Mutex<Chitchat>>>>,
    digest_bound: DigestBound,
    /// Peers that have not yet been sent a reply carrying our leave marker.
    leave_pending: Mutex<Option<HashSet<SocketAddr>>>,
    leaving: AtomicBool,
}

impl GossipShared {
    pub(crate) fn new(
        node_id: NodeId,
        public_addr: SocketAddr,
        cluster_id: &str,
        network: RpcNetwork,
        send_timeout: Duration,
        inbox: mpsc::Sender<Inbound>,
    ) -> Self {
        Self {
            table: watch::Sender::new(None),
            digest_bound: DigestBound::new(cluster_id),
            node_id,
            public_addr,
            network,
            send_timeout,
            in_flight: AtomicUsize::new(0),
            inbox,
            waiting: Mutex::new(WaitingReplies::default()),
            members: std::sync::OnceLock::new(),
            leave_pending: Mutex::new(None),
            leaving: AtomicBool::new(false),
        }
    }

    /// From now on, track which of `peers` were delivered a SYN-ACK or ACK (the replies that
    /// carry our state, including the leave marker set just before).
    pub(crate) fn begin_leave(&self, peers: HashSet<SocketAddr>) {
        *self.leave_pending.lock() = Some(peers);
        self.leaving.store(true, Ordering::Release);
    }

    /// Waits until every peer of [`begin_leave`](Self::begin_leave) was delivered a reply, or
    /// `deadline`. Returns the peers still pending.
    pub(crate) async fn wait_leave_delivered(&self, deadline: Instant) -> usize {
        loop {
            let pending = self.leave_pending.lock().as_ref().map_or(0, HashSet::len);
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until no gossip send is in flight, or `deadline`.
    pub(crate) async fn wait_idle(&self, deadline: Instant) {
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn delivered_reply(&self, to: SocketAddr) {
        if let Some(pending) = self.leave_pending.lock().as_mut() {
            pending.remove(&to);
        }
    }

    /// Gossip to a live member's address goes over that member's channel from now on.
    pub(crate) fn know_members(&self, view: watch::Receiver<Arc<MembershipView>>) {
        let _ = self.members.set(view);
    }

    /// chitchat runs: the digests it is handed are checked against its `table` from now on
    /// (until then, [`Socket::recv`] hands it nothing).
    pub(crate) fn know_table(&self, table: Arc<tokio::sync::Mutex<Chitchat>>) {
        self.table.send_replace(Some(table));
    }

    /// chitchat's state, once [`know_table`](Self::know_table) gave it.
    async fn table(&self) -> anyhow::Result<Arc<tokio::sync::Mutex<Chitchat>>> {
        let mut table = self.table.subscribe();
        let known = table.wait_for(Option::is_some).await;
        let known = known.context("the gossip transport stopped")?;
        Ok(known.clone().expect("waited for"))
    }

    /// `bytes` (a message `gossip_check` passed, whose digest lists `listed`) as chitchat may
    /// take it: if its digest lists more new nodes than chitchat's table has room for, those
    /// past the room leave it (the node goes on gossiping with the sender, and learns of them
    /// once there is room). Waits until chitchat runs.
    async fn fit_to_table(
        &self,
        bytes: Vec<u8>,
        listed: Vec<ChitchatId>,
    ) -> Result<(Vec<u8>, Vec<ChitchatId>), gossip_check::Refusal> {
        if listed.is_empty() {
            return Ok((bytes, listed));
        }
        let Ok(table) = self.table().await else {
            return Ok((bytes, listed));
        };
        let table = table.lock_owned().await;
        let known = DigestNodes::of(&table);
        if known.admits(&self.digest_bound, &listed).is_ok() {
            return Ok((bytes, listed));
        }
        gossip_refused("table_full");
        debug!(
            listed = listed.len(),
            "gossip lists more new nodes than the table has room for: the rest leave its digest"
        );
        let fitting = known.fitting(&self.digest_bound, &listed);
        let keep = |id: &ChitchatId| known.contains(id) || fitting.contains(id);
        let fitted = gossip_check::restrict_digest(&bytes, keep)?;
        let listed = listed.into_iter().filter(|id| keep(id)).collect();
        Ok((fitted, listed))
    }

    /// The channel to `to`: the member's, if a live member is there; else the address's.
    fn channel_to(&self, to: SocketAddr) -> datacake_rpc::Channel {
        let member = self.members.get().and_then(|view| {
            let view = view.borrow();
            let member = view.live.iter().find(|m| m.public_addr == to);
            member.map(|m| m.node_id)
        });
        match member {
            Some(node_id) => self.network.get_or_connect_node(node_id, to),
            None => self.network.get_or_connect(to),
        }
    }

    /// See [`WaitingReplies::wait`].
    fn wait_for_reply(&self, from: SocketAddr, answer: oneshot::Sender<Answer>) -> bool {
        self.waiting.lock().wait(from, answer)
    }

    /// See [`WaitingReplies::hand`]. A reply handed over while leaving carries our leave
    /// marker to `to`.
    fn hand_reply(&self, to: SocketAddr, reply: Vec<u8>) -> bool {
        let handed = self.waiting.lock().hand(to, Answer::Reply(reply));
        if handed && self.leaving.load(Ordering::Acquire) {
            self.delivered_reply(to);
        }
        handed
    }

    /// Sends `payload` to `to` in the background.
    fn spawn_send(self: &Arc<Self>, to: SocketAddr, payload: Vec<u8>, is_reply: bool) {
        let shared = self.clone();
        let counts_for_leave = is_reply && self.leaving.load(Ordering::Acquire);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let channel = shared.channel_to(to);
            let mut client = RpcClient::<GossipService>::new(channel);
            client.set_timeout(shared.send_timeout);
            let packet = GossipPacket {
                node_id: shared.node_id,
                from: shared.public_addr.to_string(),
                payload,
            };
            match client.send(&packet).await {
                Ok(ack) => {
                    if counts_for_leave {
                        shared.delivered_reply(to);
                    }
                    if !ack.reply.is_empty() {
                        let reply = Inbound {
                            from: to,
                            bytes: ack.reply.as_slice().to_vec(),
                            answer: None,
                            place: None,
                        };
                        if shared.inbox.try_send(reply).is_err() {
                            debug!(peer=%to, "gossip inbox full or closed: reply dropped");
                        }
                    }
                }
                // Gossip to dead or not-yet-started peers fails all the time: not worth more.
                Err(status) => debug!(peer=%to, error=%status, "gossip send failed"),
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl fmt::Debug for GossipShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipShared")
            .field("public_addr", &self.public_addr)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

/// The nodes chitchat's digest lists now: every node it records but those scheduled for
/// deletion (which chitchat leaves out).
struct DigestNodes<'a> {
    states: &'a BTreeMap<ChitchatId, NodeState>,
    deleting: HashSet<&'a ChitchatId>,
}

impl<'a> DigestNodes<'a> {
    fn of(table: &'a Chitchat) -> Self {
        Self {
            states: table.node_states(),
            deleting: table.scheduled_for_deletion_nodes().collect(),
        }
    }

    fn contains(&self, id: &ChitchatId) -> bool {
        self.states.contains_key(id) && !self.deleting.contains(id)
    }

    /// The ids themselves.
    fn ids(&self) -> impl Iterator<Item = &'a ChitchatId> + '_ {
        self.states.keys().filter(|id| !self.deleting.contains(id))
    }

    /// See [`DigestBound::fitting`].
    fn fitting(&self, bound: &DigestBound, listed: &[ChitchatId]) -> HashSet<ChitchatId> {
        bound.fitting(self.ids(), |id| self.contains(id), listed)
    }

    /// See [`DigestBound::admits`].
    fn admits(
        &self,
        bound: &DigestBound,
        listed: &[ChitchatId],
    ) -> Result<(), gossip_check::Refusal> {
        bound.admits(self.ids(), |id| self.contains(id), listed)
    }
}

/// Calls waiting for chitchat's reply to the SYN they carried, per claimed sender address,
/// oldest first (chitchat answers a sender's SYNs in order).
#[derive(Default)]
struct WaitingReplies {
    by_sender: HashMap<SocketAddr, VecDeque<oneshot::Sender<Answer>>>,
    /// How many wait in all.
    count: usize,
}

impl WaitingReplies {
    /// Keeps `answer` for chitchat's reply to the SYN `from` sent; `false` (and `answer`
    /// dropped, so its call returns without a reply) if too many calls wait already.
    fn wait(&mut self, from: SocketAddr, answer: oneshot::Sender<Answer>) -> bool {
        if self.count >= MAX_WAITING_REPLIES {
            // Calls that gave up (their senders are closed) free their places first.
            self.by_sender.retain(|_, queue| {
                queue.retain(|answer| !answer.is_closed());
                !queue.is_empty()
            });
            self.count = self.by_sender.values().map(VecDeque::len).sum();
            if self.count >= MAX_WAITING_REPLIES {
                return false;
            }
        }
        self.by_sender.entry(from).or_default().push_back(answer);
        self.count += 1;
        true
    }

    /// Hands chitchat's reply to `to` (or the refusal of the SYN it answers) to the oldest
    /// call from `to` still waiting for one; `false` if none is (the reply is then dropped,
    /// never sent to `to` on a call of ours).
    fn hand(&mut self, to: SocketAddr, mut reply: Answer) -> bool {
        let Some(queue) = self.by_sender.get_mut(&to) else {
            return false;
        };
        let handed = loop {
            let Some(answer) = queue.pop_front() else {
                break false;
            };
            self.count -= 1;
            match answer.send(reply) {
                Ok(()) => break true,
                // That call gave up: the next one from the same sender gets it.
                Err(back) => reply = back,
            }
        };
        if queue.is_empty() {
            self.by_sender.remove(&to);
        }
        handed
    }
}

/// The chitchat [`Transport`] whose single socket is fed by the node's [`GossipService`].
pub(crate) struct RpcTransport {
    shared: Arc<GossipShared>,
    inbox: Mutex<Option<mpsc::Receiver<Inbound>>>,
}

impl RpcTransport {
    /// A transport sending through `shared` and receiving what the gossip service queues on
    /// the other end of `inbox`.
    pub(crate) fn new(shared: Arc<GossipShared>, inbox: mpsc::Receiver<Inbound>) -> Self {
        Self {
            shared,
            inbox: Mutex::new(Some(inbox)),
        }
    }

    /// The queue the gossip service (and replies to our SYNs) push into, with its capacity.
    pub(crate) fn inbox() -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
        mpsc::channel(INBOX_CAPACITY)
    }
}

#[async_trait]
impl Transport for RpcTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inbox = self
            .inbox
            .lock()
            .take()
            .context("the gossip transport can be opened only once")?;
        let mut encoder = Encoder::open().await?;
        let sentinel = encoder
            .encode(ChitchatEnvelope {
                version: ProtocolVersion::V0,
                message: ChitchatMessage::BadCluster,
            })
            .await?;
        let decoder = Decoder::open(sentinel).await?;
        let (out_tx, out_rx) = mpsc::channel(INBOX_CAPACITY);
        let decode_task = tokio::spawn(decode_loop(inbox, out_tx, decoder, self.shared.clone()));
        Ok(Box::new(RpcSocket {
            shared: self.shared.clone(),
            encoder,
            received: out_rx,
            pending: None,
            decode_task,
        }))
    }
}

/// The socket chitchat gossips through.
struct RpcSocket {
    shared: Arc<GossipShared>,
    encoder: Encoder,
    received: mpsc::Receiver<Decoded>,
    /// A packet taken from `received` and not yet handed to chitchat (kept across a
    /// cancelled [`Socket::recv`]).
    pending: Option<Decoded>,
    decode_task: JoinHandle<()>,
}

impl Drop for RpcSocket {
    fn drop(&mut self) {
        self.decode_task.abort();
    }
}

#[async_trait]
impl Socket for RpcSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.shared.public_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Our answer to a peer's SYN goes back on the peer's call; an ACK is a new call.
        let answers_syn = matches!(
            envelope.message,
            ChitchatMessage::SynAck { .. } | ChitchatMessage::BadCluster
        );
        let is_ack = matches!(envelope.message, ChitchatMessage::Ack { .. });
        let payload = match self.encoder.encode(envelope).await {
            Ok(payload) => payload,
            Err(error) => {
                warn!(error=%error, "gossip encoder failed: reopening it");
                self.encoder = Encoder::open().await?;
                return Err(error);
            }
        };
        let num_bytes_sent = payload.len();
        if !answers_syn {
            self.shared.spawn_send(to, payload, is_ack);
        } else if !self.shared.hand_reply(to, payload) {
            debug!(peer=%to, "the call that carried this SYN is gone: reply dropped");
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe: a packet taken from the decoded queue waits in `pending` until it is
    /// handed over or dropped. Handing it over gives its sender's place in the
    /// [`FairInbox`] back. chitchat processes what this returns before it calls again, so
    /// the digest check sees the table the packet will meet.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let decoded = match self.pending.take() {
                Some(decoded) => decoded,
                None => (self.received.recv().await).context("the gossip service stopped")?,
            };
            if decoded.listed.is_empty() {
                return Ok(decoded.outcome);
            }
            self.pending = Some(decoded);
            let table = self.shared.table().await?;
            let table = table.lock().await;
            let decoded = self.pending.take().expect("taken above");
            let admitted =
                DigestNodes::of(&table).admits(&self.shared.digest_bound, &decoded.listed);
            drop(table);
            match admitted {
                Ok(()) => return Ok(decoded.outcome),
                Err(refusal) => {
                    let from = decoded.outcome.from_addr;
                    warn!(peer=%from, %refusal, "gossip dropped: the gossip table is full");
                    gossip_refused("table_full");
                    if decoded.call_waits {
                        self.shared.waiting.lock().hand(from, Answer::TableFull);
                    }
                }
            }
        }
    }
}

/// Decodes queued packets until the queue or the socket goes away. A call's packet may be
/// a SYN (its call then waits for chitchat's reply) or an ACK; a SYN-ACK or `BadCluster` is
/// taken only as the response to our own SYN.
async fn decode_loop(
    mut inbox: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Decoded>,
    mut decoder: Decoder,
    shared: Arc<GossipShared>,
) {
    let budget = DecodedBudget::default();
    while let Some(Inbound {
        from,
        bytes,
        answer,
        // Handed on with the packet: the sender's place stays taken until chitchat takes it.
        place,
    }) = inbox.recv().await
    {
        let refuse = |answer: Option<oneshot::Sender<Answer>>, reason| {
            if let Some(answer) = answer {
                let _ = answer.send(Answer::Refused(reason));
            }
        };
        let checked = match gossip_check::check(&bytes) {
            Ok(checked) => checked,
            Err(refusal) => {
                warn!(peer=%from, len=bytes.len(), %refusal, "invalid gossip payload dropped");
                gossip_refused("invalid");
                refuse(answer, "invalid gossip payload");
                continue;
            }
        };
        // Nodes chitchat's table has no room for leave the digest here (checked again, on
        // the table as it is then, when chitchat takes the message).
        let (bytes, listed) = match shared.fit_to_table(bytes, checked.listed).await {
            Ok(fitted) => fitted,
            Err(refusal) => {
                warn!(peer=%from, %refusal, "invalid gossip payload dropped");
                gossip_refused("invalid");
                refuse(answer, "invalid gossip payload");
                continue;
            }
        };
        // Taken before decoding (which builds chitchat's structs), given back when chitchat
        // takes the message.
        let Some(share) = budget.take(checked.decoded_len) else {
            debug!(peer=%from, len=checked.decoded_len, "decoded gossip waiting at its byte bound: dropped");
            gossip_refused("queue_full");
            if let Some(answer) = answer {
                let _ = answer.send(Answer::Nothing);
            }
            continue;
        };
        let envelope = match decoder.decode(&bytes).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                warn!(peer=%from, len=bytes.len(), "invalid gossip payload dropped");
                gossip_refused("invalid");
                refuse(answer, "invalid gossip payload");
                continue;
            }
            Err(error) => {
                warn!(peer=%from, error=%error, "gossip decoder failed: reopening it");
                refuse(answer, "the gossip decoder failed");
                match Decoder::open(decoder.sentinel.clone()).await {
                    Ok(fresh) => decoder = fresh,
                    Err(error) => {
                        warn!(error=%error, "cannot reopen the gossip decoder: gossip stops");
                        return;
                    }
                }
                continue;
            }
        };
        let call_waits = matches!(
            (&envelope.message, &answer),
            (ChitchatMessage::Syn { .. }, Some(_))
        );
        match (&envelope.message, answer) {
            (ChitchatMessage::Syn { .. }, Some(answer)) => {
                if !shared.wait_for_reply(from, answer) {
                    debug!(peer=%from, "too many gossip calls wait for a reply: SYN dropped");
                    continue;
                }
            }
            (ChitchatMessage::Ack { .. }, Some(answer)) => {
                let _ = answer.send(Answer::Nothing);
            }
            (_, answer @ Some(_)) => {
                gossip_refused("invalid");
                refuse(
                    answer,
                    "a SYN-ACK or BadCluster is taken only as the response to this node's SYN",
                );
                continue;
            }
            (ChitchatMessage::BadCluster, None) => {
                warn!(peer=%from, "a peer refused our gossip: it belongs to another cluster");
            }
            (ChitchatMessage::SynAck { .. }, None) => {}
            (_, None) => {
                debug!(peer=%from, "a peer answered our SYN with a SYN or an ACK: dropped");
                continue;
            }
        }
        let decoded = Decoded {
            outcome: RecvOutcome {
                from_addr: from,
                envelope,
                num_bytes_received: bytes.len(),
            },
            listed,
            call_waits,
            _place: place,
            _share: share,
        };
        if out.send(decoded).await.is_err() {
            return;
        }
    }
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Encodes envelopes with chitchat's own codec: its `UdpSocket` sends to a capture socket.
struct Encoder {
    chitchat: UdpSocket,
    chitchat_addr: SocketAddr,
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    buf: Vec<u8>,
}

impl Encoder {
    async fn open() -> anyhow::Result<Self> {
        let chitchat = UdpSocket::open(loopback()).await?;
        let chitchat_addr = chitchat.local_addr()?;
        let capture = tokio::net::UdpSocket::bind(loopback()).await?;
        let capture_addr = capture.local_addr()?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            capture,
            capture_addr,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.chitchat.send(self.capture_addr, envelope).await?;
        loop {
            let (len, from) = timeout(CODEC_TIMEOUT, self.capture.recv_from(&mut self.buf))
                .await
                .context("gossip encoder timed out")??;
            // Anything else on the host could write to the capture socket: ignore it.
            if from == self.chitchat_addr {
                return Ok(self.buf[..len].to_vec());
            }
        }
    }
}

/// Decodes bytes with chitchat's own codec: a feeder socket sends them to chitchat's
/// `UdpSocket`, followed by a sentinel (an encoded `BadCluster`), so that bytes chitchat
/// rejects (it skips them silently) are noticed instead of blocking the decoder. Only the
/// feeder's datagrams are taken: any process on the host can send to chitchat's socket.
struct Decoder {
    chitchat: UdpSocket,
    chitchat_addr: SocketAddr,
    feeder: tokio::net::UdpSocket,
    /// The only sender whose datagrams the chitchat socket takes.
    feeder_addr: SocketAddr,
    sentinel: Vec<u8>,
}

impl Decoder {
    async fn open(sentinel: Vec<u8>) -> anyhow::Result<Self> {
        let chitchat = UdpSocket::open(loopback()).await?;
        let chitchat_addr = chitchat.local_addr()?;
        let feeder = tokio::net::UdpSocket::bind(loopback()).await?;
        let feeder_addr = feeder.local_addr()?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            feeder,
            feeder_addr,
            sentinel,
        })
    }

    /// A `BadCluster` message (header only) decoded directly, so the sentinel stays
    /// unambiguous.
    fn bad_cluster(&self, bytes: &[u8]) -> Option<ChitchatEnvelope> {
        let s = &self.sentinel;
        if bytes.len() == s.len() && bytes[..2] == s[..2] && bytes[3..] == s[3..] {
            let version = ProtocolVersion::from_code(bytes[2])?;
            return Some(ChitchatEnvelope {
                version,
                message: ChitchatMessage::BadCluster,
            });
        }
        None
    }

    /// `Ok(None)` if chitchat rejects the bytes.
    async fn decode(&mut self, bytes: &[u8]) -> anyhow::Result<Option<ChitchatEnvelope>> {
        if bytes.len() == self.sentinel.len() {
            // Short enough to be a `BadCluster`; anything else this short is invalid.
            return Ok(self.bad_cluster(bytes));
        }
        if bytes.len() > MAX_PAYLOAD {
            return Ok(None);
        }
        self.feeder.send_to(bytes, self.chitchat_addr).await?;
        self.feeder
            .send_to(&self.sentinel, self.chitchat_addr)
            .await?;
        let first = self.recv_fed().await?;
        if matches!(first.envelope.message, ChitchatMessage::BadCluster) {
            // chitchat skipped the payload and this is our sentinel — or the payload was a
            // malformed `BadCluster` and the sentinel is still queued. Start afresh so the
            // decoder cannot be out of step.
            *self = Decoder::open(std::mem::take(&mut self.sentinel)).await?;
            return Ok(None);
        }
        let sentinel = self.recv_fed().await?;
        anyhow::ensure!(
            matches!(sentinel.envelope.message, ChitchatMessage::BadCluster),
            "gossip decoder out of step"
        );
        Ok(Some(first.envelope))
    }

    /// The next message chitchat decodes from our feeder, within [`CODEC_TIMEOUT`].
    /// Anything else on the host can write to the chitchat socket: datagrams from another
    /// sender are skipped, so they are never taken as the decoding of our bytes (they never
    /// passed [`gossip_check`]).
    async fn recv_fed(&mut self) -> anyhow::Result<RecvOutcome> {
        let deadline = Instant::now() + CODEC_TIMEOUT;
        loop {
            let received = timeout_at(deadline, self.chitchat.recv())
                .await
                .context("gossip decoder timed out")??;
            if received.from_addr == self.feeder_addr {
                return Ok(received);
            }
            debug!(from=%received.from_addr, "a datagram from outside the gossip decoder skipped");
        }
    }
}

/// Test fixtures: the loopback codec and encoded messages.
#[cfg(test)]
mod codec_fixtures {
    use super::*;

    /// An encoder, and a decoder with the encoder's sentinel.
    pub(super) async fn codec() -> (Encoder, Decoder) {
        let mut encoder = Encoder::open().await.unwrap();
        let sentinel = encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::BadCluster,
        )
        .await;
        (encoder, Decoder::open(sentinel).await.unwrap())
    }

    /// `message` as chitchat encodes it with protocol `version`.
    pub(super) async fn encode(
        encoder: &mut Encoder,
        version: ProtocolVersion,
        message: ChitchatMessage,
    ) -> Vec<u8> {
        encoder
            .encode(ChitchatEnvelope { version, message })
            .await
            .unwrap()
    }

    /// A SYN of cluster `c` with an empty digest, as chitchat encodes it with `version`.
    /// The cluster id of a decoded SYN; `None` for anything else.
    pub(super) fn syn_cluster(decoded: Option<&ChitchatEnvelope>) -> Option<&str> {
        match decoded?.message {
            ChitchatMessage::Syn { ref cluster_id, .. } => Some(cluster_id),
            _ => None,
        }
    }

    pub(super) async fn empty_syn(encoder: &mut Encoder, version: ProtocolVersion) -> Vec<u8> {
        let message = ChitchatMessage::Syn {
            cluster_id: "c".to_string(),
            digest: Default::default(),
        };
        encode(encoder, version, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::codec_fixtures::{codec, empty_syn, encode, syn_cluster};
    use super::*;
    use crate::gossip_check::wire;

    #[tokio::test]
    async fn codec_round_trips_and_rejects_junk() {
        let (mut encoder, mut decoder) = codec().await;
        let sentinel = decoder.sentinel.clone();

        // A BadCluster with another protocol version decodes directly.
        let v1 = encode(
            &mut encoder,
            ProtocolVersion::V1,
            ChitchatMessage::BadCluster,
        )
        .await;
        let decoded = decoder.decode(&v1).await.unwrap().unwrap();
        assert_eq!(decoded.version, ProtocolVersion::V1);

        // Junk of every length is refused, and the decoder stays in step afterwards.
        for junk in [&b"junk"[..], &b"xy"[..], &[0u8; 300][..], &sentinel[..3]] {
            assert!(decoder.decode(junk).await.unwrap().is_none(), "{junk:?}");
        }
        let ack = encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::Ack {
                delta: Default::default(),
            },
        )
        .await;
        let decoded = decoder.decode(&ack).await.unwrap().unwrap();
        assert!(matches!(decoded.message, ChitchatMessage::Ack { .. }));
        assert!(decoder.decode(&sentinel).await.unwrap().is_some());
    }

    /// Any process on the host can send to the decoder's chitchat socket. A message queued
    /// there by someone else (here an ACK, and a `BadCluster` standing for our sentinel) is
    /// never taken as the decoding of our bytes: it never passed the gossip check.
    #[tokio::test]
    async fn the_decoder_takes_only_what_its_feeder_sent() {
        let (mut encoder, mut decoder) = codec().await;
        let forged = encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::Ack {
                delta: Default::default(),
            },
        )
        .await;
        let intruder = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        for datagram in [&forged, &decoder.sentinel] {
            intruder
                .send_to(datagram, decoder.chitchat_addr)
                .await
                .unwrap();
        }
        let syn = empty_syn(&mut encoder, ProtocolVersion::V1).await;
        let decoded = decoder.decode(&syn).await.unwrap();
        assert!(syn_cluster(decoded.as_ref()).is_some(), "{decoded:?}");
        // In step afterwards.
        let decoded = decoder.decode(&forged).await.unwrap().unwrap();
        assert!(matches!(decoded.message, ChitchatMessage::Ack { .. }));
    }

    fn packet() -> Inbound {
        Inbound {
            from: SocketAddr::from(([10, 0, 0, 1], 1)),
            bytes: Vec::new(),
            answer: None,
            place: None,
        }
    }

    /// A transport's socket (chitchat's end, which only the test reads) and the inbox a
    /// gossip service would push into.
    async fn unread_transport() -> (Box<dyn Socket>, FairInbox) {
        let (tx, rx) = RpcTransport::inbox();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let shared = GossipShared::new(
            1,
            addr,
            "c",
            RpcNetwork::new(),
            Duration::from_secs(1),
            tx.clone(),
        );
        let transport = RpcTransport::new(Arc::new(shared), rx);
        let socket = transport.open(addr).await.unwrap();
        (socket, FairInbox::new(tx))
    }

    #[test]
    fn one_sender_cannot_fill_the_inbox() {
        let (tx, mut rx) = RpcTransport::inbox();
        let inbox = FairInbox::new(tx);
        let taken = (0..INBOX_CAPACITY)
            .filter(|_| inbox.push(7, packet()))
            .count();
        assert_eq!(taken, PER_SENDER, "a flood from node 7 gets its share only");
        assert!(inbox.push(2, packet()), "node 2's heartbeat still gets in");
        // Once the gossip loop took one of node 7's packets, node 7 has a place again.
        drop(rx.try_recv().unwrap());
        assert!(inbox.push(7, packet()));
        assert!(!inbox.push(7, packet()));
        // Places come back when packets are dropped unread, too.
        drop(rx);
        assert!(!inbox.push(3, packet()), "closed");
        assert!(inbox.waiting.lock().is_empty(), "every place given back");
    }

    /// A sender's share counts until chitchat takes its packets, not only until they are
    /// decoded: with chitchat not reading, a flood from node 7 has at most its share held
    /// across the inbox and the decoded queue, and node 2 still gets in.
    #[tokio::test]
    async fn one_sender_cannot_fill_the_decoded_queue() {
        let (mut encoder, _) = codec().await;
        let ack = encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::Ack {
                delta: Default::default(),
            },
        )
        .await;
        // chitchat's socket, which nobody reads until the end.
        let (mut socket, inbox) = unread_transport().await;
        // An ACK a peer's call carried; the decode loop answers it once decoded.
        let push = |sender| {
            let (answer, decoded) = oneshot::channel();
            let packet = Inbound {
                bytes: ack.clone(),
                answer: Some(answer),
                ..packet()
            };
            inbox.push(sender, packet).then_some(decoded)
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut held, mut waiting, mut decoded) = (0, Vec::new(), 0);
        while decoded < PER_SENDER {
            assert!(
                Instant::now() < deadline,
                "timed out: {decoded} of node 7's packets decoded"
            );
            if let Some(answer) = push(7) {
                held += 1;
                waiting.push(answer);
            }
            assert!(
                held <= PER_SENDER,
                "node 7 has {held} packets in the inbox and the decoded queue"
            );
            waiting.retain_mut(|answer| match answer.try_recv() {
                Ok(Answer::Nothing) => {
                    decoded += 1;
                    false
                }
                Err(oneshot::error::TryRecvError::Empty) => true,
                other => panic!("an ACK is decoded and answered: {other:?}"),
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(push(7).is_none(), "node 7's share waits for chitchat");
        assert!(push(2).is_some(), "node 2's heartbeat still gets in");
        // Once chitchat took one of node 7's packets, node 7 has a place again.
        socket.recv().await.unwrap();
        assert!(push(7).is_some());
        assert!(push(7).is_none());
    }

    /// An ACK whose delta carries `key_values` key/values of one node: 44 bytes each
    /// decompressed, and well compressed (the keys count up, the values are alike).
    fn large_ack(key_values: u64) -> Vec<u8> {
        use crate::gossip_check::wire::Op;
        let keys: Vec<String> = (0..key_values).map(|i| format!("{i:06}")).collect();
        let mut ops = vec![Op::Node {
            node_id: "9",
            generation: 1,
            addr: SocketAddr::from(([10, 0, 0, 9], 7000)),
            from_version: 0,
        }];
        ops.extend(keys.iter().zip(1..).map(|(key, version)| Op::KeyValue {
            key,
            value: "xxxxxxxxxxxxxxxxxxxxxxxx",
            version,
        }));
        let ops = wire::ops(&ops);
        // chitchat decompresses a block to at most 64 KiB.
        let blocks: Vec<&[u8]> = ops.chunks(60_000).collect();
        wire::ack(&wire::stream(&blocks, true))
    }

    /// Decoded messages wait within [`MAX_DECODED_BYTES`] of gossip: before, only the queue's
    /// 1,024 places bounded them, and each may decompress to a megabyte (and decode to several
    /// times that). Here chitchat takes nothing while 48 senders send one large ACK each.
    #[tokio::test]
    async fn a_flood_of_large_gossip_waits_within_the_byte_bound() {
        let ack = large_ack(12_000);
        assert!(ack.len() <= MAX_PAYLOAD, "{} bytes", ack.len());
        let decoded_len = gossip_check::check(&ack).unwrap().decoded_len;
        assert!(decoded_len > 500_000, "{decoded_len} bytes decompressed");
        let (mut socket, inbox) = unread_transport().await;
        let mut answers = Vec::new();
        for sender in 0..48 {
            let (answer, answered) = oneshot::channel();
            let packet = Inbound {
                bytes: ack.clone(),
                answer: Some(answer),
                ..packet()
            };
            assert!(inbox.push(sender, packet), "sender {sender}");
            answers.push(answered);
        }
        // Every call is answered once its packet was decoded and queued, or dropped.
        for answered in answers {
            let answer = timeout(Duration::from_secs(30), answered).await;
            assert!(matches!(answer, Ok(Ok(Answer::Nothing))), "{answer:?}");
        }
        let mut queued = 0;
        while timeout(Duration::from_millis(200), socket.recv())
            .await
            .is_ok()
        {
            queued += 1;
        }
        let fit = MAX_DECODED_BYTES / decoded_len;
        assert!(
            (1..=fit).contains(&queued),
            "{queued} large ACKs waited for chitchat (at most {fit} fit the byte bound)"
        );
        // Taken by chitchat, they gave their bytes back: the next one queues.
        let (answer, answered) = oneshot::channel();
        let packet = Inbound {
            bytes: ack.clone(),
            answer: Some(answer),
            ..packet()
        };
        assert!(inbox.push(99, packet));
        assert!(matches!(answered.await, Ok(Answer::Nothing)));
        timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("queued after the others were taken")
            .unwrap();
    }

    /// A gossip message is one datagram; a call carrying more is refused as too large (the
    /// server has read the body already: datacake-rpc has no per-handler limit).
    #[tokio::test]
    async fn a_payload_larger_than_a_datagram_is_refused_as_too_large() {
        let (node, client, _victim) = node_and_victim().await;
        let packet = GossipPacket {
            node_id: 9,
            from: "127.0.0.1:9".to_string(),
            payload: vec![0; MAX_PAYLOAD + 1],
        };
        let refused = client.send(&packet).await.unwrap_err();
        assert_eq!(
            refused.code(),
            datacake_rpc::ErrorCode::PayloadTooLarge,
            "{refused}"
        );
        node.shutdown().await;
    }

    /// A SYN of protocol V0 (uncompressed digest) as chitchat encodes it, for a cluster of
    /// `members` nodes: ids 1.., start times (generations) spread over a day, addresses in
    /// one /16, heartbeats in the ten thousands and versions in the tens, as a long-running
    /// cluster gossips them.
    fn syn_v0(members: u16) -> Vec<u8> {
        syn_v0_padded(members, 0)
    }

    /// [`syn_v0`] with the last member's id `pad` bytes longer.
    fn syn_v0_padded(members: u16, pad: usize) -> Vec<u8> {
        let mut ids: Vec<String> = (1..=members).map(|id| id.to_string()).collect();
        if let Some(last) = ids.last_mut() {
            last.extend(std::iter::repeat_n('x', pad));
        }
        let nodes: Vec<_> = (0..members)
            .map(|i| {
                let [hi, lo] = (i + 1).to_be_bytes();
                wire::DigestEntry {
                    node_id: &ids[usize::from(i)],
                    generation: 1_796_000_000_000_000 + u64::from(i) * 86_400_000_000 / 4096,
                    addr: SocketAddr::from(([10, 0, hi, lo], 7000)),
                    heartbeat: 40_000 + u64::from(i) * 7 % 5000,
                    max_version: 20 + u64::from(i) % 13,
                }
            })
            .collect();
        wire::syn_v0("cluster", &nodes)
    }

    /// The most members whose V0 SYN still fits a datagram.
    fn most_v0_members() -> u16 {
        (1..=u16::MAX)
            .take_while(|n| syn_v0(*n).len() <= MAX_PAYLOAD)
            .last()
            .unwrap()
    }

    /// chitchat fills a SYN-ACK or an ACK with deltas up to a whole datagram (65,507 bytes)
    /// once a node's state is larger than that: the decoder must take such a message.
    #[tokio::test]
    async fn a_message_filling_a_whole_datagram_is_decoded() {
        let (_encoder, mut decoder) = codec().await;
        let members = most_v0_members();
        let pad = MAX_PAYLOAD - syn_v0(members).len();
        let full = syn_v0_padded(members, pad);
        assert_eq!(full.len(), MAX_PAYLOAD);
        let syn = decoder.decode(&full).await.unwrap();
        assert_eq!(
            syn_cluster(syn.as_ref()),
            Some("cluster"),
            "a {MAX_PAYLOAD}-byte SYN is not decoded: {syn:?}"
        );
        let over = syn_v0_padded(members, pad + 1);
        assert!(
            decoder.decode(&over).await.unwrap().is_none(),
            "over a datagram"
        );
    }

    /// chitchat's digest lists every member (and every node dead for less than half the dead
    /// node grace period) in each SYN. The compressed digest (protocol V1, which nodes gossip
    /// with) makes the same cluster's SYN several times smaller than V0's. (How many members a
    /// node records is bounded by the digest's uncompressed size, `DigestBound`: compression
    /// depends on the ids.) The figures are printed for the README.
    #[tokio::test]
    async fn the_compressed_digest_fits_several_times_more_members() {
        let (mut encoder, mut decoder) = codec().await;
        let most_v0 = most_v0_members();
        let v0 = syn_v0(most_v0);
        let mut syn = decoder.decode(&v0).await.unwrap().expect("a valid SYN");
        assert_eq!(syn_cluster(Some(&syn)), Some("cluster"));
        syn.version = ProtocolVersion::V1;
        let v1 = encoder.encode(syn).await.unwrap();
        let ratio = v0.len() as f64 / v1.len() as f64;
        println!(
            "SYN for {most_v0} members: V0 {} bytes, V1 {} bytes ({ratio:.1}x smaller)",
            v0.len(),
            v1.len()
        );
        assert!(ratio >= 3.0, "V1 is only {ratio:.1}x smaller");
        let back = decoder.decode(&v1).await.unwrap().expect("V1 decodes");
        assert_eq!(syn_cluster(Some(&back)), Some("cluster"));
        assert_eq!(back.version, ProtocolVersion::V1);
    }

    #[test]
    fn replies_go_to_the_oldest_waiting_call_of_their_sender_and_waiting_is_bounded() {
        let (a, b) = (
            SocketAddr::from(([10, 0, 0, 1], 1)),
            SocketAddr::from(([10, 0, 0, 2], 1)),
        );
        let mut waiting = WaitingReplies::default();
        let (gave_up, gone) = oneshot::channel();
        let (first, mut first_rx) = oneshot::channel();
        let (other, mut other_rx) = oneshot::channel();
        assert!(waiting.wait(a, gave_up) && waiting.wait(a, first) && waiting.wait(b, other));
        drop(gone);
        assert!(
            waiting.hand(a, Answer::Reply(vec![1])),
            "the call that gave up is skipped"
        );
        assert!(matches!(first_rx.try_recv(), Ok(Answer::Reply(r)) if r == [1]));
        assert!(
            !waiting.hand(a, Answer::Reply(vec![2])),
            "nobody from `a` waits any more"
        );
        assert!(other_rx.try_recv().is_err(), "`b`'s call still waits");
        assert_eq!(waiting.count, 1);

        let mut receivers = Vec::new();
        while waiting.count < MAX_WAITING_REPLIES {
            let (tx, rx) = oneshot::channel();
            assert!(waiting.wait(a, tx));
            receivers.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        assert!(!waiting.wait(a, tx), "full");
        receivers.clear();
        let (tx, _rx) = oneshot::channel();
        assert!(waiting.wait(a, tx), "calls that gave up free their places");
        assert_eq!(waiting.count, 2);
    }

    /// A node of cluster "c" on loopback, a client of its gossip service, and a listener
    /// standing for a third party whose address a packet may claim.
    async fn node_and_victim() -> (
        crate::DatacakeNode,
        RpcClient<GossipService>,
        tokio::net::TcpListener,
    ) {
        let local = "127.0.0.1:0".parse().unwrap();
        let node = crate::DatacakeNodeBuilder::new(
            1,
            crate::ConnectionConfig::new(local, local, Vec::<String>::new()),
        )
        .with_cluster_id("c")
        .connect()
        .await
        .unwrap();
        let channel = datacake_rpc::Channel::connect(node.me().public_addr);
        let victim = tokio::net::TcpListener::bind(local).await.unwrap();
        (node, RpcClient::new(channel), victim)
    }

    /// Fails unless `reply` is a SYN-ACK (`what` says what that shows).
    fn assert_syn_ack(reply: &Option<ChitchatEnvelope>, what: &str) {
        assert!(
            matches!(
                reply,
                Some(ChitchatEnvelope {
                    message: ChitchatMessage::SynAck { .. },
                    ..
                })
            ),
            "{what}: {reply:?}"
        );
    }

    /// Fails if anything connects to `victim` within a few gossip rounds of the node.
    async fn assert_never_called(victim: &tokio::net::TcpListener) {
        let called = timeout(Duration::from_millis(500), victim.accept()).await;
        assert!(
            called.is_err(),
            "the node called the address the packet claimed"
        );
    }

    #[tokio::test]
    async fn a_syn_is_answered_on_its_own_call_and_never_at_the_claimed_address() {
        let (node, client, victim) = node_and_victim().await;
        let (mut encoder, mut decoder) = codec().await;
        let syn = empty_syn(&mut encoder, ProtocolVersion::V0).await;
        let packet = GossipPacket {
            node_id: 9,
            from: victim.local_addr().unwrap().to_string(),
            payload: syn,
        };
        let ack = client.send(&packet).await.expect("a SYN is answered");
        let reply = decoder.decode(ack.reply.as_slice()).await.unwrap();
        assert_syn_ack(&reply, "the response carries the SYN-ACK");
        assert_never_called(&victim).await;
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_syn_ack_sent_as_a_call_is_refused_and_never_acknowledged() {
        let (node, client, victim) = node_and_victim().await;
        let (mut encoder, _) = codec().await;
        // An unsolicited SYN-ACK with an empty digest would make chitchat ACK with its whole
        // state, to whatever address the packet claims.
        let syn_ack = encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::SynAck {
                digest: Default::default(),
                delta: Default::default(),
            },
        )
        .await;
        let packet = GossipPacket {
            node_id: 9,
            from: victim.local_addr().unwrap().to_string(),
            payload: syn_ack,
        };
        let refused = client.send(&packet).await.unwrap_err();
        assert_eq!(
            refused.code(),
            datacake_rpc::ErrorCode::InvalidPayload,
            "{refused}"
        );
        // Junk is refused as such, not silently taken.
        let junk = GossipPacket {
            payload: b"junk".to_vec(),
            ..packet
        };
        let refused = client.send(&junk).await.unwrap_err();
        assert_eq!(
            refused.code(),
            datacake_rpc::ErrorCode::InvalidPayload,
            "{refused}"
        );
        assert_never_called(&victim).await;
        node.shutdown().await;
    }

    /// Every message chitchat writes passes the gossip check: each message type in both
    /// protocol versions, the largest V0 SYN and its V1 re-encoding, and real deltas (a
    /// node's answer to a SYN that knows nothing, and an ACK carrying that answer's delta).
    #[tokio::test]
    async fn what_chitchat_writes_passes_the_gossip_check() {
        let (node, client, _victim) = node_and_victim().await;
        let (mut encoder, mut decoder) = codec().await;
        let mut written = vec![
            encode(
                &mut encoder,
                ProtocolVersion::V1,
                ChitchatMessage::BadCluster,
            )
            .await,
        ];
        let mut largest = decoder
            .decode(&syn_v0(most_v0_members()))
            .await
            .unwrap()
            .unwrap();
        written.push(
            encoder
                .encode(ChitchatEnvelope {
                    version: ProtocolVersion::V0,
                    message: largest.message,
                })
                .await
                .unwrap(),
        );
        largest = decoder
            .decode(written.last().unwrap())
            .await
            .unwrap()
            .unwrap();
        written.push(
            encoder
                .encode(ChitchatEnvelope {
                    version: ProtocolVersion::V1,
                    message: largest.message,
                })
                .await
                .unwrap(),
        );
        for version in [ProtocolVersion::V0, ProtocolVersion::V1] {
            let syn = empty_syn(&mut encoder, version).await;
            let packet = GossipPacket {
                node_id: 9,
                from: "127.0.0.1:9".to_string(),
                payload: syn.clone(),
            };
            let syn_ack = client
                .send(&packet)
                .await
                .unwrap()
                .reply
                .as_slice()
                .to_vec();
            let Some(ChitchatEnvelope {
                message: ChitchatMessage::SynAck { digest, delta },
                ..
            }) = decoder.decode(&syn_ack).await.unwrap()
            else {
                panic!("a SYN-ACK answers the SYN");
            };
            let ack = encode(&mut encoder, version, ChitchatMessage::Ack { delta }).await;
            // More than the header and an empty delta: the node's key/values are in it.
            assert!(ack.len() > 100, "{} bytes", ack.len());
            let syn = encode(
                &mut encoder,
                version,
                ChitchatMessage::Syn {
                    cluster_id: "c".to_string(),
                    digest,
                },
            )
            .await;
            written.extend([syn_ack, ack, syn]);
        }
        // Each passes, with the nodes its digest lists: the largest SYN's members, the node
        // itself in its SYN-ACK and in the SYN built from that, none in an ACK or BadCluster.
        let me = node
            .with_chitchat(|chitchat| chitchat.self_chitchat_id().clone())
            .await
            .unwrap();
        for (i, bytes) in written.iter().enumerate() {
            let checked = gossip_check::check(bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"));
            let listed = checked.listed;
            match (i, bytes[3]) {
                (1 | 2, _) => assert_eq!(listed.len(), usize::from(most_v0_members())),
                (_, 0 | 1) => assert_eq!(listed, std::slice::from_ref(&me)),
                _ => assert_eq!(listed, []),
            }
        }
        node.shutdown().await;
    }

    /// A delta whose max version is below its own key/values trips an `assert!` in chitchat's
    /// gossip task, which would then end for good; a decompression bomb would take hundreds
    /// of megabytes. Both are refused, and the node goes on gossiping.
    #[tokio::test]
    async fn a_malicious_delta_is_refused_and_the_node_goes_on_gossiping() {
        use crate::gossip_check::wire::Op;

        let (node, client, victim) = node_and_victim().await;
        let (mut encoder, mut decoder) = codec().await;
        let me = node
            .with_chitchat(|chitchat| chitchat.self_chitchat_id().clone())
            .await
            .unwrap();
        // The node's own state (a few key/values so far): key/value 1,000, then max version
        // 999. chitchat applies it (999 is news), and then finds its max version at 1,000.
        let ops = wire::ops(&[
            Op::Node {
                node_id: &me.node_id,
                generation: me.generation_id,
                addr: me.gossip_advertise_addr,
                from_version: 0,
            },
            Op::KeyValue {
                key: "x",
                value: "y",
                version: 1_000,
            },
            Op::SetMaxVersion(999),
        ]);
        let packet = |payload| GossipPacket {
            node_id: 9,
            from: victim.local_addr().unwrap().to_string(),
            payload,
        };
        let lowering = client
            .send(&packet(wire::ack(&wire::stream(&[&ops], true))))
            .await;
        let bomb = client.send(&packet(wire::bomb())).await;

        // The node still answers a SYN with its state...
        let syn = empty_syn(&mut encoder, ProtocolVersion::V1).await;
        let reply = client
            .send(&packet(syn))
            .await
            .unwrap()
            .reply
            .as_slice()
            .to_vec();
        let reply = decoder.decode(&reply).await.unwrap();
        assert_syn_ack(&reply, "the node no longer answers SYNs");
        // ...and a node seeded from it joins.
        let local = "127.0.0.1:0".parse().unwrap();
        let seed = node.me().public_addr.to_string();
        let second = crate::DatacakeNodeBuilder::new(
            2,
            crate::ConnectionConfig::new(local, local, vec![seed]),
        )
        .with_cluster_id("c")
        .connect()
        .await
        .unwrap();
        let both_see_both =
            || async { [&node, &second].iter().all(|n| n.live_members().len() == 2) };
        test_helper::wait_for(
            "both nodes to see each other",
            Duration::from_secs(10),
            both_see_both,
        )
        .await;
        for refused in [lowering, bomb] {
            let refused = refused.expect_err("refused");
            assert_eq!(
                refused.code(),
                datacake_rpc::ErrorCode::InvalidPayload,
                "{refused}"
            );
        }
        second.shutdown().await;
        node.shutdown().await;
    }

    /// A made-up node: its id, generation and address.
    type MadeUp = (String, u64, SocketAddr);

    /// `count` made-up nodes (random 8-character ids, generations and addresses, which
    /// barely compress), every one different; `seed` picks them.
    fn made_up_nodes(count: usize, seed: u64) -> Vec<MadeUp> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let [a, b, c, d, e, f, ..] = next().to_le_bytes();
                let port = u16::from_le_bytes([e, f]);
                let id = format!("{:08x}", next() as u32);
                (id, next(), SocketAddr::from(([a, b, c, d], port)))
            })
            .collect()
    }

    /// A SYN of cluster "c" whose digest lists `nodes`, in protocol V1 as nodes gossip. (Not
    /// V0: chitchat answers in the SYN's version but reserves room beside its digest for a
    /// delta by the size of its own V1 digest (chitchat 0.13's `process_message`), so near
    /// the bound its uncompressed V0 answer can come out larger than a datagram, which it
    /// cannot send: read from chitchat's code, and the likely cause of this test's two CI
    /// failures with V0 SYNs, at `6104816` and `5791fd8`; not reproduced here.)
    fn syn_listing(nodes: &[MadeUp]) -> Vec<u8> {
        let entries: Vec<_> = nodes
            .iter()
            .map(|(node_id, generation, addr)| wire::DigestEntry {
                node_id,
                generation: *generation,
                addr: *addr,
                heartbeat: 1,
                max_version: 0,
            })
            .collect();
        wire::syn_v1("c", &entries)
    }

    /// chitchat records every node a SYN's digest lists, and its own digest must fit a
    /// datagram: before the table had a bound, a few SYNs of made-up nodes grew it past one,
    /// and an `assert!` ended the node's gossip task at the next SYN it answered. Now the
    /// nodes a table has no room for leave a digest before chitchat sees it: the node answers
    /// every SYN, records as many as fit and no more, and its digest still fits.
    #[tokio::test]
    async fn a_flood_of_made_up_nodes_is_kept_out_and_the_node_goes_on_gossiping() {
        const FULL: usize = 1 + 1_300 + 33;
        let (node, client, victim) = node_and_victim().await;
        let (mut encoder, mut decoder) = codec().await;
        let packet = |payload| GossipPacket {
            node_id: 9,
            from: victim.local_addr().unwrap().to_string(),
            payload,
        };
        let floods: Vec<Vec<MadeUp>> = (0..6).map(|seed| made_up_nodes(1_300, seed)).collect();
        // Then some nodes the node knows (the first flood's) beside new ones.
        let mixed: Vec<MadeUp> = floods[0][..300]
            .iter()
            .chain(&made_up_nodes(300, 99))
            .cloned()
            .collect();
        let mut syns: Vec<(String, Vec<u8>)> = floods
            .iter()
            .enumerate()
            .map(|(i, nodes)| (format!("flood {i}"), syn_listing(nodes)))
            .collect();
        syns.push(("known and new nodes".into(), syn_listing(&mixed)));
        syns.push((
            "an empty SYN".into(),
            empty_syn(&mut encoder, ProtocolVersion::V1).await,
        ));
        for (what, syn) in syns {
            assert!(syn.len() <= MAX_PAYLOAD, "{what}");
            let reply = client.send(&packet(syn)).await.expect(&what);
            let reply = reply.reply.as_slice().to_vec();
            assert_syn_ack(&decoder.decode(&reply).await.unwrap(), &what);
            // The SYN-ACK carries the node's whole digest, from the second flood on a full
            // one: the node (42 bytes: id "1", IPv4), the first flood (1,300 entries of 49
            // bytes) and the first 33 nodes of the second, 65,359 bytes, 65,372 with 4 block
            // headers and the end, of the 65,403 a digest may take.
            let listed = gossip_check::check(&reply).unwrap().listed;
            let expected = if what == "flood 0" { 1 + 1_300 } else { FULL };
            assert_eq!(listed.len(), expected, "{what}");
        }
        let recorded = node
            .with_chitchat(|chitchat| chitchat.node_states().len())
            .await
            .unwrap();
        assert_eq!(recorded, FULL);
        node.shutdown().await;
    }
}

/// A member's certificate speaks for that member only.
#[cfg(all(test, feature = "certs"))]
mod tls_tests {
    use datacake_rpc::{Channel, ErrorCode};

    use super::*;
    use crate::certs::ClusterCa;
    use crate::{ConnectionConfig, DatacakeNodeBuilder};

    #[tokio::test]
    async fn gossip_claiming_another_node_is_refused() {
        let ca = ClusterCa::generate("c").unwrap();
        let local = "127.0.0.1:0".parse().unwrap();
        let node =
            DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
                .with_cluster_id("c")
                .with_tls(ca.node_tls(1))
                .connect()
                .await
                .unwrap();
        // Node 7's certificate, used by a member gone rogue.
        let channel = Channel::builder()
            .tls(ca.node_tls(7))
            .connect(node.me().public_addr);
        let client = RpcClient::<GossipService>::new(channel);
        let (mut encoder, _) = super::codec_fixtures::codec().await;
        let ack = super::codec_fixtures::encode(
            &mut encoder,
            ProtocolVersion::V0,
            ChitchatMessage::Ack {
                delta: Default::default(),
            },
        )
        .await;
        let packet = |node_id| GossipPacket {
            node_id,
            from: "127.0.0.1:9".to_string(),
            payload: ack.clone(),
        };
        let denied = client.send(&packet(3)).await.unwrap_err();
        assert_eq!(denied.code(), ErrorCode::PermissionDenied, "{denied}");
        assert!(denied.message().contains("datacake://c/7"), "{denied}");
        client.send(&packet(7)).await.expect("7 speaks for itself");
        node.shutdown().await;
    }

    /// A node calls a member through a channel that accepts only that member's certificate:
    /// an address that turns out to be another member's (stale gossip, or a member lying
    /// about its address) reaches nobody.
    #[tokio::test]
    async fn a_channel_to_a_member_reaches_that_member_only() {
        let ca = ClusterCa::generate("c").unwrap();
        let local = "127.0.0.1:0".parse().unwrap();
        let start = |id| {
            DatacakeNodeBuilder::new(
                id,
                ConnectionConfig::new(local, local, Vec::<String>::new()),
            )
            .with_cluster_id("c")
            .with_tls(ca.node_tls(id))
            .connect()
        };
        let (one, two) = (start(1).await.unwrap(), start(2).await.unwrap());
        let (mut encoder, _) = super::codec_fixtures::codec().await;
        let ack = GossipPacket {
            node_id: 1,
            from: one.me().public_addr.to_string(),
            payload: super::codec_fixtures::encode(
                &mut encoder,
                ProtocolVersion::V0,
                ChitchatMessage::Ack {
                    delta: Default::default(),
                },
            )
            .await,
        };
        let at_two = two.me().public_addr;
        let to =
            |id| RpcClient::<GossipService>::new(one.network().get_or_connect_node(id, at_two));
        to(2).send(&ack).await.expect("node 2 answers as node 2");
        let refused = to(3).send(&ack).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Connection, "{refused}");
        assert!(refused.message().contains("datacake://c/3"), "{refused}");
        // By address alone, any member of the cluster is accepted.
        RpcClient::<GossipService>::new(one.network().get_or_connect(at_two))
            .send(&ack)
            .await
            .expect("a member");
        two.shutdown().await;
        one.shutdown().await;
    }
}
