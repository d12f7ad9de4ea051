//! [`DatacakeHandle`]: the cheap, cloneable side of a running node that tasks and
//! extensions keep, and the [`ShutdownSignal`] it hands out.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datacake_rpc::Server;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::PeerAuth;
use crate::clock::Clock;
use crate::consistency::{Consistency, ConsistencyError};
use crate::error::NodeError;
use crate::membership::{ClusterMember, MembershipChanges, MembershipView, NodeId};
use crate::network::RpcNetwork;
use crate::selector::NodeSelector;
use crate::statistics::ClusterStatistics;

/// What a node and all its handles share.
pub(crate) struct NodeShared {
    pub(crate) me: ClusterMember,
    /// This process's chitchat generation (its start time).
    pub(crate) generation: u64,
    pub(crate) cluster_id: String,
    pub(crate) clock: Clock,
    pub(crate) network: RpcNetwork,
    pub(crate) selector: parking_lot::Mutex<Box<dyn NodeSelector>>,
    pub(crate) view: watch::Receiver<Arc<MembershipView>>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// The node's RPC server, owned by [`DatacakeNode`]: handles do not keep it alive.
    pub(crate) server: std::sync::Weak<Server>,
    pub(crate) auth: Arc<PeerAuth>,
    /// What discovery last found (empty without discovery sources).
    pub(crate) discovered: Arc<watch::Sender<Arc<[SocketAddr]>>>,
    /// Whether the node was given a seed other than its own public address.
    pub(crate) other_seeds: bool,
    /// Work extensions run before a graceful leave is announced, by the id of the
    /// [`ExtensionGuard`](crate::ExtensionGuard) that registered it.
    pub(crate) leave_hooks: parking_lot::Mutex<Vec<(u64, LeaveHook)>>,
}

/// A hook registered with [`ExtensionGuard::before_leave`](crate::ExtensionGuard::before_leave).
pub(crate) type LeaveHook =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A cheap, cloneable handle to a running node, for tasks and extensions to keep. A
/// [`DatacakeNode`](crate::DatacakeNode) derefs to its handle, so every accessor here is
/// also the node's.
#[derive(Clone)]
pub struct DatacakeHandle {
    pub(crate) inner: Arc<NodeShared>,
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

    /// The address of a newer incarnation of this node's id, if the cluster lists it instead
    /// of this process: this process stalled or was cut off long enough to be held dead, and
    /// its id was started again there. Its writes would then carry the same node id as the
    /// newer process's, so stores refuse them (the eventually consistent store returns
    /// `StoreError::Superseded`); stop this process. `None` while this process is the
    /// member (the usual case).
    pub fn superseded_by(&self) -> Option<SocketAddr> {
        self.replaced_by(self.inner.me.node_id, self.inner.generation)
    }

    /// This process's incarnation of its node id: its gossip generation (the time it
    /// started). A restart of the id is a newer one.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The address of a newer incarnation of node `node_id` than `generation`, if the
    /// cluster lists one: a message that incarnation `generation` sent comes from a process
    /// the cluster has replaced (see [`superseded_by`](Self::superseded_by), the same test of
    /// this process). `None` for the current incarnation, a newer one, or an id the cluster
    /// does not list.
    pub fn replaced_by(&self, node_id: NodeId, generation: u64) -> Option<SocketAddr> {
        let view = self.inner.view.borrow();
        let newer = view.newer_incarnation(node_id, generation)?;
        Some(newer.member.public_addr)
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

    /// Whether this node was pointed at a cluster: given a seed other than its own public
    /// address ([`ConnectionConfig::seeds`](crate::ConnectionConfig); a seed given by host
    /// name counts), or its discovery sources found other addresses. Such a node that has
    /// seen no peer yet has not joined: it started alone because its seeds did not answer
    /// within the join timeout, and knows nothing of the members it will count. (The
    /// eventually consistent store meets no level above `None` on it then.)
    pub fn expects_peers(&self) -> bool {
        self.inner.other_seeds || !self.inner.discovered.borrow().is_empty()
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
    ///
    /// `node_ids` is any collection of ids, owned or borrowed: an array (`[1, 2]`), a slice
    /// (`&[1, 2]`, as datacake 0.x took), a `Vec` or a reference to one, an iterator.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, NodeId};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let addr = "127.0.0.1:0".parse()?;
    /// let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(addr, addr, Vec::<String>::new()))
    ///     .connect()
    ///     .await?;
    /// let wait = Duration::from_secs(5);
    /// node.wait_for_nodes([1], wait).await?;
    /// node.wait_for_nodes(&[1], wait).await?;
    /// let ids: Vec<NodeId> = vec![1];
    /// node.wait_for_nodes(&ids, wait).await?;
    /// node.wait_for_nodes(ids.iter().copied(), wait).await?;
    /// node.wait_for_nodes(ids, wait).await?;
    /// node.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_nodes(
        &self,
        node_ids: impl IntoIterator<Item = impl std::borrow::Borrow<NodeId>>,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let ids: Vec<NodeId> = node_ids
            .into_iter()
            .map(|id| *std::borrow::Borrow::borrow(&id))
            .collect();
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
