//! A running node ([`DatacakeNode`]): its start, extensions, graceful leave and abrupt stop.
//! Its cloneable read side is [`DatacakeHandle`](crate::DatacakeHandle) (`handle.rs`), the
//! membership view it keeps current is derived in `view.rs`.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use chitchat::ChitchatHandle;
use datacake_rpc::{RpcService, Server};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info};

use crate::auth::PeerAuth;
use crate::clock::Clock;
use crate::config::Timings;
use crate::discovery::DiscoveryTarget;
use crate::extension::ClusterExtension;
use crate::handle::{DatacakeHandle, NodeShared};
use crate::join::JoinSnapshot;
use crate::membership::{ClusterMember, MembershipView, KEY_JOINING, KEY_LEAVING};
use crate::network::RpcNetwork;
use crate::selector::NodeSelector;
use crate::transport::GossipShared;
use crate::view::{build_view, run_membership, ViewMemory};

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

/// The parts [`DatacakeNode::start`] assembles a node from.
pub(crate) struct NodeParts {
    pub(crate) me: ClusterMember,
    pub(crate) generation: u64,
    pub(crate) cluster_id: String,
    pub(crate) clock: Clock,
    pub(crate) network: RpcNetwork,
    pub(crate) selector: Box<dyn NodeSelector>,
    pub(crate) server: Server,
    pub(crate) chitchat: ChitchatHandle,
    pub(crate) gossip: Arc<GossipShared>,
    pub(crate) auth: Arc<PeerAuth>,
    pub(crate) timings: Timings,
    pub(crate) other_seeds: bool,
}

impl DatacakeNode {
    /// Assembles the node and starts its membership task.
    pub(crate) async fn start(parts: NodeParts) -> Self {
        let (shutdown, _) = watch::channel(false);
        let mut memory = ViewMemory::default();
        let initial = {
            let chitchat = parts.chitchat.chitchat();
            let guard = chitchat.lock().await;
            build_view(
                &guard,
                &mut memory,
                parts.timings.min_failure_timeout(),
                &parts.auth,
            )
        };
        // The first view counts too: its members joined this node's view.
        crate::metrics::view_published(&initial, &MembershipView::default());
        let (view_tx, view) = watch::channel(Arc::new(initial));
        parts.gossip.know_members(view.clone());
        let membership_task = tokio::spawn(run_membership(
            parts.chitchat.chitchat(),
            memory,
            parts.timings.clone(),
            view_tx,
            shutdown.subscribe(),
            parts.auth.clone(),
        ));
        let gossip_watch = tokio::spawn(watch_gossip(
            parts.chitchat.termination_watcher(),
            shutdown.subscribe(),
            parts.me.node_id,
        ));
        let server = Arc::new(parts.server);
        let shared = NodeShared {
            me: parts.me,
            generation: parts.generation,
            cluster_id: parts.cluster_id,
            clock: parts.clock,
            network: parts.network,
            selector: parking_lot::Mutex::new(parts.selector),
            view,
            shutdown,
            tasks: parking_lot::Mutex::new(vec![membership_task, gossip_watch]),
            server: Arc::downgrade(&server),
            auth: parts.auth,
            discovered: Arc::new(watch::channel(Arc::from([])).0),
            other_seeds: parts.other_seeds,
            leave_hooks: parking_lot::Mutex::new(Vec::new()),
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

    /// Adds an RPC service to the node's server; peers reach it at [`me()`](DatacakeHandle::me)'s
    /// public address. A service of the same name is replaced.
    pub fn add_rpc_service<Svc: RpcService>(&self, service: Svc) {
        self.server.add_service(service);
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

    /// What [`connect`](crate::DatacakeNodeBuilder::connect) looks at while joining (see
    /// [`JoinSnapshot`]).
    pub(crate) async fn join_snapshot(&self) -> JoinSnapshot {
        let Some(chitchat) = self.chitchat.lock().as_ref().map(ChitchatHandle::chitchat) else {
            return JoinSnapshot::default();
        };
        let guard = chitchat.lock().await;
        JoinSnapshot::of(&guard)
    }

    /// Runs `f` on this node's chitchat; `None` once the node shut down. For tests that
    /// forge what gossip would bring.
    #[cfg(test)]
    pub(crate) async fn with_chitchat<T>(
        &self,
        f: impl FnOnce(&mut chitchat::Chitchat) -> T,
    ) -> Option<T> {
        let chitchat = self
            .chitchat
            .lock()
            .as_ref()
            .map(ChitchatHandle::chitchat)?;
        let mut guard = chitchat.lock().await;
        Some(f(&mut guard))
    }

    /// Ends the join: deletes the joining marker, so the node counts as a full member (see
    /// `ViewEntry::rank`).
    pub(crate) async fn finish_joining(&self) {
        let Some(chitchat) = self.chitchat.lock().as_ref().map(ChitchatHandle::chitchat) else {
            return;
        };
        chitchat.lock().await.self_node_state().delete(KEY_JOINING);
    }

    /// Leaves the cluster gracefully and stops.
    ///
    /// 0. Runs the extensions' leave hooks
    ///    ([`ExtensionGuard::before_leave`](crate::ExtensionGuard::before_leave)) while peers
    ///    still count this node as a live member, all at once and bounded together by the
    ///    leave timeout.
    /// 1. Marks this node as leaving in gossip and pushes that to every live peer at once, then
    ///    waits (bounded by the leave timeout) until each was sent our state — so peers report
    ///    the departure in [`MembershipChange::left`](crate::MembershipChange::left) within a
    ///    gossip round or two rather than after a failure-detector timeout.
    /// 2. Cancels the tasks of [`spawn_task`](DatacakeHandle::spawn_task) and signals
    ///    [`shutdown_signal`](DatacakeHandle::shutdown_signal).
    /// 3. Stops gossip and the RPC server.
    #[tracing::instrument(skip_all, fields(node_id = self.me().node_id))]
    pub async fn shutdown(self) {
        let me = self.me().clone();
        self.run_leave_hooks().await;
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

    /// Runs every registered leave hook at the same time, for at most the leave timeout; the
    /// ones still running then are cancelled.
    async fn run_leave_hooks(&self) {
        let hooks = std::mem::take(&mut *self.handle.inner.leave_hooks.lock());
        if hooks.is_empty() {
            return;
        }
        let mut running = tokio::task::JoinSet::new();
        for (_, hook) in hooks {
            running.spawn(hook());
        }
        let all_done = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(self.timings.leave_timeout, all_done)
            .await
            .is_err()
        {
            info!(
                node_id = self.me().node_id,
                unfinished = running.len(),
                "leave hooks cancelled: the leave timeout passed"
            );
        }
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

/// A node has every accessor of its [`DatacakeHandle`] (`me`, `clock`, `live_members`,
/// `select_nodes`, `spawn_task`, ...), so they are written once.
impl std::ops::Deref for DatacakeNode {
    type Target = DatacakeHandle;

    fn deref(&self) -> &DatacakeHandle {
        &self.handle
    }
}

impl Drop for DatacakeNode {
    fn drop(&mut self) {
        // A drop without `shutdown` is an abrupt stop: no leave is announced, and no leave
        // hook runs (dropping them also drops the handles they hold).
        self.handle.inner.shutdown.send_replace(true);
        self.handle.inner.leave_hooks.lock().clear();
        if let Some(chitchat) = self.chitchat.lock().take() {
            chitchat.abort();
        }
        for task in self.handle.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// Logs an error if chitchat's gossip task fails while the node runs (a panic included): the
/// membership view would freeze without a word otherwise. chitchat ends cleanly (`Ok`) only
/// when told to, at shutdown; an abrupt stop sets `shutdown` before it aborts the task.
async fn watch_gossip(
    ended: impl std::future::Future<Output = anyhow::Result<()>>,
    mut shutdown: watch::Receiver<bool>,
    node_id: crate::NodeId,
) {
    let stopping = shutdown.clone();
    tokio::select! {
        result = ended => match result {
            Ok(()) => debug!(node_id, "gossip loop ended"),
            Err(_) if *stopping.borrow() => {}
            Err(error) => error!(
                node_id,
                error=%error,
                "gossip loop died: this node's membership view no longer changes"
            ),
        },
        _ = shutdown.wait_for(|stopping| *stopping) => {}
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
