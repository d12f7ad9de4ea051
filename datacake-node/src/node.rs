//! A running node ([`DatacakeNode`]) and its cloneable read side ([`DatacakeHandle`]).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatHandle, ChitchatId, NodeState};
use datacake_rpc::{RpcService, Server};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::auth::PeerAuth;
use crate::clock::Clock;
use crate::config::Timings;
use crate::consistency::{Consistency, ConsistencyError};
use crate::discovery::DiscoveryTarget;
use crate::error::NodeError;
use crate::extension::ClusterExtension;
use crate::membership::{
    ClusterMember, GossipedNode, HeartbeatTracker, MembershipChanges, MembershipView, NodeId,
    KEY_LEAVING,
};
use crate::network::RpcNetwork;
use crate::selector::NodeSelector;
use crate::statistics::ClusterStatistics;
use crate::transport::GossipShared;

/// What a node and all its handles share.
struct NodeShared {
    me: ClusterMember,
    cluster_id: String,
    clock: Clock,
    network: RpcNetwork,
    selector: parking_lot::Mutex<Box<dyn NodeSelector>>,
    view: watch::Receiver<Arc<MembershipView>>,
    shutdown: watch::Sender<bool>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// The node's RPC server, owned by [`DatacakeNode`]: handles do not keep it alive.
    server: std::sync::Weak<Server>,
    auth: Arc<PeerAuth>,
    /// What discovery last found (empty without discovery sources).
    discovered: Arc<watch::Sender<Arc<[SocketAddr]>>>,
}

/// A cheap, cloneable handle to a running node: the same read accessors as
/// [`DatacakeNode`], for tasks and extensions to keep.
#[derive(Clone)]
pub struct DatacakeHandle {
    inner: Arc<NodeShared>,
}

impl fmt::Debug for DatacakeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatacakeHandle")
            .field("me", &self.inner.me)
            .field("cluster_id", &self.inner.cluster_id)
            .finish_non_exhaustive()
    }
}

/// Resolves when the node shuts down (or is dropped). Cloneable.
///
/// ```no_run
/// # async fn demo(node: &datacake_node::DatacakeNode) {
/// let mut signal = node.shutdown_signal();
/// tokio::spawn(async move {
///     loop {
///         tokio::select! {
///             _ = signal.wait() => break,
///             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => { /* periodic work */ }
///         }
///     }
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl ShutdownSignal {
    /// `true` once the node has begun shutting down.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the node begins shutting down.
    pub async fn wait(&mut self) {
        // An error means the node is gone altogether: that is a shutdown too.
        let _ = self.rx.wait_for(|stopped| *stopped).await;
    }
}

impl DatacakeHandle {
    /// This node as a member of the cluster.
    pub fn me(&self) -> &ClusterMember {
        &self.inner.me
    }

    /// The cluster id gossip is restricted to.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// Checks that a caller may speak for node `claimed`, for an extension's handler to call
    /// before it believes a node id its message carries (`peer` is
    /// [`Request::peer`](datacake_rpc::Request::peer)). With TLS on, the caller's
    /// certificate must name `claimed` in this cluster, else the call fails with
    /// [`PermissionDenied`](datacake_rpc::ErrorCode::PermissionDenied); on a plaintext
    /// node everything passes (nothing can be proven there).
    ///
    /// ```no_run
    /// # fn check(handle: &datacake_node::DatacakeHandle, request: &datacake_rpc::Request<u32>, sender: u32) -> Result<(), datacake_rpc::Status> {
    /// handle.verify_caller(request.peer(), sender)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_caller(
        &self,
        peer: Option<&datacake_rpc::PeerIdentity>,
        claimed: NodeId,
    ) -> Result<(), datacake_rpc::Status> {
        self.inner.auth.verify(peer, claimed)
    }

    /// The node's hybrid logical clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The node's pool of RPC channels.
    pub fn network(&self) -> &RpcNetwork {
        &self.inner.network
    }

    /// The live members (this node included), in node id order.
    pub fn live_members(&self) -> Vec<ClusterMember> {
        self.inner.view.borrow().member_list()
    }

    /// The live members like [`live_members`](Self::live_members), as a shared snapshot:
    /// the same `Arc` until the membership changes, so it is cheap to take on every
    /// operation, and two snapshots are of the same view exactly when they are
    /// [`Arc::ptr_eq`].
    pub fn live_members_shared(&self) -> Arc<[ClusterMember]> {
        self.inner.view.borrow().live.clone()
    }

    /// Live, dead and left members and data centres, as this node currently sees them.
    pub fn statistics(&self) -> ClusterStatistics {
        self.inner.view.borrow().statistics()
    }

    /// The ids of the nodes that left gracefully and have not come back, in order.
    pub fn left_node_ids(&self) -> Vec<NodeId> {
        self.inner.view.borrow().left.iter().copied().collect()
    }

    /// The ids of the nodes the failure detector holds dead (not left, not live again), in
    /// order.
    pub fn dead_node_ids(&self) -> Vec<NodeId> {
        self.inner.view.borrow().dead.iter().copied().collect()
    }

    /// A stream of membership changes from now on (see [`MembershipChanges`]).
    pub fn membership_changes(&self) -> MembershipChanges {
        MembershipChanges::new(self.inner.view.clone())
    }

    /// The addresses the node's [`Discovery`](crate::Discovery) sources returned at their
    /// last successful polls, in order: the union over the sources, without duplicates or
    /// this node's own address, at most [`MAX_DISCOVERED_ADDRS`](crate::MAX_DISCOVERED_ADDRS).
    /// Empty without discovery sources; [`ConnectionConfig::seeds`](crate::ConnectionConfig)
    /// are not listed.
    pub fn discovered_addrs(&self) -> Vec<SocketAddr> {
        self.inner.discovered.borrow().to_vec()
    }

    /// The peers to contact for `consistency`, chosen by the node's [`NodeSelector`].
    pub async fn select_nodes(
        &self,
        consistency: Consistency,
    ) -> Result<Vec<ClusterMember>, ConsistencyError> {
        let me = &self.inner.me;
        let peers: Vec<ClusterMember> = self
            .inner
            .view
            .borrow()
            .members
            .values()
            .filter(|e| e.member.node_id != me.node_id)
            .map(|e| e.member.clone())
            .collect();
        self.inner
            .selector
            .lock()
            .select_nodes(me, &peers, consistency)
    }

    /// Waits until every node of `node_ids` is a live member, or `timeout` passes.
    pub async fn wait_for_nodes(
        &self,
        node_ids: impl IntoIterator<Item = NodeId>,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let ids: Vec<NodeId> = node_ids.into_iter().collect();
        let mut rx = self.inner.view.clone();
        let all_live = |v: &Arc<MembershipView>| ids.iter().all(|id| v.members.contains_key(id));
        let waited =
            tokio::time::timeout(timeout, async { rx.wait_for(all_live).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Shutdown),
            Err(_) => {
                let view = self.inner.view.borrow().clone();
                let missing = ids
                    .iter()
                    .copied()
                    .filter(|id| !view.members.contains_key(id))
                    .collect();
                Err(NodeError::WaitForNodesTimeout { missing, timeout })
            }
        }
    }

    /// A signal that resolves when the node shuts down.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.inner.shutdown.subscribe(),
        }
    }

    /// Spawns a background task that is cancelled when the node shuts down (or is dropped).
    /// Extensions should start their long-running work this way.
    pub fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut signal = self.shutdown_signal();
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = signal.wait() => {}
                _ = task => {}
            }
        });
        let mut tasks = self.inner.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// How many of the node's background tasks (its own and those of
    /// [`spawn_task`](Self::spawn_task)) are still running.
    pub fn running_tasks(&self) -> usize {
        self.inner
            .tasks
            .lock()
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }

    /// Removes the RPC service called `name` from the node's server (nothing happens if the
    /// node is gone). Extensions call it when they stop.
    pub fn remove_rpc_service(&self, name: &str) {
        if let Some(server) = self.inner.server.upgrade() {
            server.remove_service(name);
        }
    }
}

/// A running cluster node: gossip membership, a clock, node selection, an RPC server and the
/// extensions attached to it.
///
/// Built by [`DatacakeNodeBuilder::connect`](crate::DatacakeNodeBuilder::connect). Call
/// [`shutdown`](Self::shutdown) to leave the cluster gracefully. Dropping a node without
/// `shutdown` stops it abruptly, as a crash would: peers find out through the failure
/// detector.
pub struct DatacakeNode {
    handle: DatacakeHandle,
    server: Arc<Server>,
    /// chitchat until shutdown; shared with the discovery task, which gossips through it.
    chitchat: Arc<parking_lot::Mutex<Option<ChitchatHandle>>>,
    gossip: Arc<GossipShared>,
    timings: Timings,
}

impl fmt::Debug for DatacakeNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatacakeNode")
            .field("me", self.me())
            .field("cluster_id", &self.cluster_id())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// See [`DatacakeNode::join_snapshot`].
#[derive(Debug, Default)]
pub(crate) struct JoinSnapshot {
    /// Other nodes gossip has told us of.
    pub(crate) known_peers: usize,
    /// The sum of their heartbeats (other than those claiming our id): it grows whenever
    /// fresh gossip arrives.
    pub(crate) peer_heartbeats: u64,
    /// Other nodes claiming our id.
    pub(crate) same_id: Vec<SameIdNode>,
}

/// Another node claiming our node id.
#[derive(Debug)]
pub(crate) struct SameIdNode {
    pub(crate) id: ChitchatId,
    pub(crate) heartbeat: u64,
    pub(crate) live: bool,
}

/// The parts [`DatacakeNode::start`] assembles a node from.
pub(crate) struct NodeParts {
    pub(crate) me: ClusterMember,
    pub(crate) cluster_id: String,
    pub(crate) clock: Clock,
    pub(crate) network: RpcNetwork,
    pub(crate) selector: Box<dyn NodeSelector>,
    pub(crate) server: Server,
    pub(crate) chitchat: ChitchatHandle,
    pub(crate) gossip: Arc<GossipShared>,
    pub(crate) auth: Arc<PeerAuth>,
    pub(crate) timings: Timings,
}

impl DatacakeNode {
    /// Assembles the node and starts its membership task.
    pub(crate) async fn start(parts: NodeParts) -> Self {
        let (shutdown, _) = watch::channel(false);
        let mut tracker = HeartbeatTracker::default();
        let initial = {
            let chitchat = parts.chitchat.chitchat();
            let guard = chitchat.lock().await;
            build_view(
                &guard,
                &mut tracker,
                parts.timings.min_failure_timeout(),
                &parts.auth,
            )
        };
        // The first view counts too: its members joined this node's view.
        crate::metrics::view_published(&initial, &MembershipView::default());
        let (view_tx, view) = watch::channel(Arc::new(initial));
        let membership_task = tokio::spawn(run_membership(
            parts.chitchat.chitchat(),
            tracker,
            parts.timings.clone(),
            view_tx,
            shutdown.subscribe(),
            parts.auth.clone(),
        ));
        let server = Arc::new(parts.server);
        let shared = NodeShared {
            me: parts.me,
            cluster_id: parts.cluster_id,
            clock: parts.clock,
            network: parts.network,
            selector: parking_lot::Mutex::new(parts.selector),
            view,
            shutdown,
            tasks: parking_lot::Mutex::new(vec![membership_task]),
            server: Arc::downgrade(&server),
            auth: parts.auth,
            discovered: Arc::new(watch::channel(Arc::from([])).0),
        };
        Self {
            handle: DatacakeHandle {
                inner: Arc::new(shared),
            },
            server,
            chitchat: Arc::new(parking_lot::Mutex::new(Some(parts.chitchat))),
            gossip: parts.gossip,
            timings: parts.timings,
        }
    }

    /// A cloneable handle with the read accessors.
    pub fn handle(&self) -> DatacakeHandle {
        self.handle.clone()
    }

    /// This node as a member of the cluster.
    pub fn me(&self) -> &ClusterMember {
        self.handle.me()
    }

    /// The cluster id gossip is restricted to.
    pub fn cluster_id(&self) -> &str {
        self.handle.cluster_id()
    }

    /// The node's hybrid logical clock.
    pub fn clock(&self) -> &Clock {
        self.handle.clock()
    }

    /// The node's pool of RPC channels.
    pub fn network(&self) -> &RpcNetwork {
        self.handle.network()
    }

    /// The live members (this node included), in node id order.
    pub fn live_members(&self) -> Vec<ClusterMember> {
        self.handle.live_members()
    }

    /// The live members as a shared snapshot (see [`DatacakeHandle::live_members_shared`]).
    pub fn live_members_shared(&self) -> Arc<[ClusterMember]> {
        self.handle.live_members_shared()
    }

    /// Live, dead and left members and data centres, as this node currently sees them.
    pub fn statistics(&self) -> ClusterStatistics {
        self.handle.statistics()
    }

    /// A stream of membership changes from now on (see [`MembershipChanges`]).
    pub fn membership_changes(&self) -> MembershipChanges {
        self.handle.membership_changes()
    }

    /// The peers to contact for `consistency`, chosen by the node's [`NodeSelector`].
    pub async fn select_nodes(
        &self,
        consistency: Consistency,
    ) -> Result<Vec<ClusterMember>, ConsistencyError> {
        self.handle.select_nodes(consistency).await
    }

    /// Waits until every node of `node_ids` is a live member, or `timeout` passes.
    pub async fn wait_for_nodes(
        &self,
        node_ids: impl IntoIterator<Item = NodeId>,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        self.handle.wait_for_nodes(node_ids, timeout).await
    }

    /// A signal that resolves when the node shuts down.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.handle.shutdown_signal()
    }

    /// Spawns a background task that is cancelled when the node shuts down (or is dropped).
    pub fn spawn_task<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn_task(task)
    }

    /// Adds an RPC service to the node's server; peers reach it at [`me()`](Self::me)'s
    /// public address. A service of the same name is replaced.
    pub fn add_rpc_service<Svc: RpcService>(&self, service: Svc) {
        self.server.add_service(service);
    }

    /// Removes the RPC service called `name`.
    pub fn remove_rpc_service(&self, name: &str) {
        self.handle.remove_rpc_service(name);
    }

    /// The addresses discovery last found (see [`DatacakeHandle::discovered_addrs`]).
    pub fn discovered_addrs(&self) -> Vec<SocketAddr> {
        self.handle.discovered_addrs()
    }

    /// What the discovery task feeds: the discovered set, the live view and chitchat.
    pub(crate) fn discovery_target(&self) -> DiscoveryTarget {
        DiscoveryTarget {
            discovered: self.handle.inner.discovered.clone(),
            view: self.handle.inner.view.clone(),
            chitchat: self.chitchat.clone(),
        }
    }

    /// Starts `extension` on this node (see [`ClusterExtension`]).
    pub async fn add_extension<E: ClusterExtension>(
        &self,
        extension: E,
    ) -> Result<E::Output, E::Error> {
        extension.init_extension(self).await
    }

    /// What [`connect`](crate::DatacakeNodeBuilder::connect) looks at while joining: how
    /// many other nodes gossip has told us of, and every other node claiming our id (not
    /// leaving) with its heartbeat and whether the failure detector holds it live.
    pub(crate) async fn join_snapshot(&self) -> JoinSnapshot {
        let Some(chitchat) = self.chitchat.lock().as_ref().map(ChitchatHandle::chitchat) else {
            return JoinSnapshot::default();
        };
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
        let known_peers = guard.node_states().keys().filter(|id| **id != me).count();
        let peer_heartbeats = guard
            .node_states()
            .iter()
            .filter(|(id, _)| id.node_id != me.node_id)
            .map(|(_, state)| u64::from(state.heartbeat()))
            .sum();
        let same_id = guard
            .node_states()
            .iter()
            .filter(|(id, _)| **id != me && id.node_id == me.node_id)
            .filter(|(_, state)| state.get(KEY_LEAVING).is_none())
            .map(|(id, state)| SameIdNode {
                id: id.clone(),
                heartbeat: state.heartbeat().into(),
                live: live.contains(id),
            })
            .collect();
        JoinSnapshot {
            known_peers,
            peer_heartbeats,
            same_id,
        }
    }

    /// Leaves the cluster gracefully and stops.
    ///
    /// 1. Marks this node as leaving in gossip and pushes that to every live peer at once, then
    ///    waits (bounded by the leave timeout) until each was sent our state — so peers report
    ///    the departure in [`MembershipChange::left`](crate::MembershipChange::left) within a
    ///    gossip round or two rather than after a failure-detector timeout.
    /// 2. Cancels the tasks of [`spawn_task`](Self::spawn_task) and signals
    ///    [`shutdown_signal`](Self::shutdown_signal).
    /// 3. Stops gossip and the RPC server.
    #[tracing::instrument(skip_all, fields(node_id = self.me().node_id))]
    pub async fn shutdown(self) {
        let me = self.me().clone();
        let deadline = Instant::now() + self.timings.leave_timeout;
        let chitchat = self.chitchat.lock().take();
        if let Some(chitchat) = chitchat {
            let peers = announce_leave(&chitchat).await;
            self.gossip.begin_leave(peers.clone());
            for peer in &peers {
                let _ = chitchat.gossip(*peer);
            }
            let pending = self.gossip.wait_leave_delivered(deadline).await;
            if pending > 0 {
                // Best effort: a peer that missed the leave (often because it is shutting
                // down too) still sees the departure through failure detection.
                info!(
                    node_id = me.node_id,
                    pending, "leave not confirmed by every peer in time; they will detect it"
                );
            }
            if let Err(error) = chitchat.shutdown().await {
                debug!(node_id=me.node_id, error=%error, "gossip loop ended with an error");
            }
            self.gossip.wait_idle(deadline).await;
        }
        self.stop_tasks(deadline).await;
        self.server.shutdown().await;
        info!(node_id=me.node_id, addr=%me.public_addr, "node left the cluster");
    }

    async fn stop_tasks(&self, deadline: Instant) {
        self.handle.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.handle.inner.tasks.lock());
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for DatacakeNode {
    fn drop(&mut self) {
        // A drop without `shutdown` is an abrupt stop: no leave is announced.
        self.handle.inner.shutdown.send_replace(true);
        if let Some(chitchat) = self.chitchat.lock().take() {
            chitchat.abort();
        }
        for task in self.handle.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// Sets the leave marker and returns the gossip addresses of the live peers.
async fn announce_leave(chitchat: &ChitchatHandle) -> HashSet<SocketAddr> {
    chitchat
        .with_chitchat(|c| {
            c.self_node_state().set(KEY_LEAVING, "true");
            let me = c.self_chitchat_id().clone();
            c.live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        })
        .await
}

fn gossiped<'a>(id: &'a ChitchatId, state: &'a NodeState) -> GossipedNode<'a> {
    GossipedNode {
        generation: id.generation_id,
        chitchat_node_id: &id.node_id,
        key_values: state.key_values().collect(),
    }
}

/// Derives the view from chitchat's state. A node is live if the failure detector holds it
/// live or its heartbeat advanced within `min_failure_timeout` (see [`HeartbeatTracker`]);
/// dead if the detector holds it dead and its heartbeat stood still that long.
fn build_view(
    chitchat: &Chitchat,
    tracker: &mut HeartbeatTracker<ChitchatId>,
    min_failure_timeout: Duration,
    auth: &PeerAuth,
) -> MembershipView {
    // tokio's clock, as chitchat's failure detector uses: simulated time under turmoil (or a
    // paused runtime), the machine's otherwise.
    let now = Instant::now().into_std();
    let states = chitchat.node_states();
    for (id, state) in states {
        tracker.observe(id, state.heartbeat().into(), now);
    }
    tracker.retain(|id| states.contains_key(id));
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let dead: HashSet<&ChitchatId> = chitchat.dead_nodes().collect();
    let still_alive = |id: &ChitchatId| tracker.advanced_within(id, min_failure_timeout, now);
    // With TLS, a node is listed at an address only once it proved that address itself.
    let admitted = |id: &ChitchatId| {
        id.node_id
            .parse()
            .is_ok_and(|node_id| auth.admits(node_id, id.gossip_advertise_addr))
    };
    let states: Vec<_> = states.iter().filter(|(id, _)| admitted(id)).collect();
    let live_nodes = states
        .iter()
        .filter(|(id, _)| live.contains(id) || still_alive(id))
        .map(|(id, state)| gossiped(id, state));
    let dead_nodes = states
        .iter()
        .filter(|(id, _)| dead.contains(id) && !live.contains(id) && !still_alive(id))
        .map(|(id, state)| gossiped(id, state));
    MembershipView::build(live_nodes, dead_nodes)
}

/// Keeps the view current: recomputed whenever chitchat's live set (or a live node's state)
/// changes, and twice per gossip interval (heartbeat progress, the minimum failure timeout,
/// forgotten nodes).
async fn run_membership(
    chitchat: Arc<AsyncMutex<Chitchat>>,
    mut tracker: HeartbeatTracker<ChitchatId>,
    timings: Timings,
    view_tx: watch::Sender<Arc<MembershipView>>,
    mut shutdown: watch::Receiver<bool>,
    auth: Arc<PeerAuth>,
) {
    let mut live_rx = chitchat.lock().await.live_nodes_watcher();
    let mut refresh = tokio::time::interval(timings.gossip_interval / 2);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let min_failure_timeout = timings.min_failure_timeout();
    loop {
        tokio::select! {
            changed = live_rx.changed() => if changed.is_err() { return },
            _ = refresh.tick() => {}
            _ = shutdown.changed() => return,
        }
        let view = build_view(
            &*chitchat.lock().await,
            &mut tracker,
            min_failure_timeout,
            &auth,
        );
        view_tx.send_if_modified(|current| {
            if **current == view {
                return false;
            }
            crate::metrics::view_published(&view, current);
            *current = Arc::new(view);
            true
        });
    }
}
