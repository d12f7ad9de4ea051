//! The membership view, derived from chitchat's state by the node's membership task: who is
//! live and who is dead, past the failure detector and the heartbeat tracker, and admitted by
//! the cluster's authentication.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatId, NodeState};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::time::Instant;
use tracing::warn;

use crate::auth::PeerAuth;
use crate::config::Timings;
use crate::membership::{
    is_foreign_addr, GossipedNode, HeartbeatTracker, MembershipView, KEY_PUBLIC_ADDR,
};

fn gossiped<'a>(id: &'a ChitchatId, state: &'a NodeState) -> GossipedNode<'a> {
    GossipedNode {
        generation: id.generation_id,
        chitchat_node_id: &id.node_id,
        addr: id.gossip_advertise_addr,
        key_values: state.key_values().collect(),
    }
}

/// What [`build_view`] carries from one view to the next.
#[derive(Debug, Default)]
pub(crate) struct ViewMemory {
    /// When each node's heartbeat last advanced.
    heartbeats: HeartbeatTracker<ChitchatId>,
    /// The nodes already reported for a foreign public address ([`is_foreign_addr`]).
    foreign_addr_reported: HashSet<ChitchatId>,
}

impl ViewMemory {
    /// Warns once about each node left out of the view because a member relayed another
    /// public address for it than the one it gossips under (and again if that happens anew
    /// after it was resolved).
    fn report_foreign_addrs(&mut self, states: &[(&ChitchatId, &NodeState)]) {
        let mut foreign = HashSet::new();
        for (id, state) in states {
            let Some(gossiped_addr) = state.get(KEY_PUBLIC_ADDR) else {
                continue;
            };
            if !is_foreign_addr(gossiped_addr, id.gossip_advertise_addr) {
                continue;
            }
            if !self.foreign_addr_reported.contains(*id) {
                warn!(
                    node_id = %id.node_id,
                    generation = id.generation_id,
                    addr = %id.gossip_advertise_addr,
                    gossiped_addr,
                    "a member relayed another public address for this node than its own: not \
                     listed until the node gossips its own again (a member may forge gossip)"
                );
            }
            foreign.insert((*id).clone());
        }
        self.foreign_addr_reported = foreign;
    }
}

/// Derives the view from chitchat's state. A node is live if the failure detector holds it
/// live or its heartbeat advanced within `min_failure_timeout` (see [`HeartbeatTracker`]);
/// dead if the detector holds it dead and its heartbeat stood still that long.
pub(crate) fn build_view(
    chitchat: &Chitchat,
    memory: &mut ViewMemory,
    min_failure_timeout: Duration,
    auth: &PeerAuth,
) -> MembershipView {
    // tokio's clock, as chitchat's failure detector uses: simulated time under turmoil (or a
    // paused runtime), the machine's otherwise.
    let now = Instant::now().into_std();
    let states = chitchat.node_states();
    for (id, state) in states {
        memory.heartbeats.observe(id, state.heartbeat().into(), now);
    }
    memory.heartbeats.retain(|id| states.contains_key(id));
    // With TLS, a node is listed at an address only once it proved that address itself: the
    // address of its chitchat identity, the only one `MembershipView::build` lists it at.
    let admitted = |id: &ChitchatId| {
        id.node_id
            .parse()
            .is_ok_and(|node_id| auth.admits(node_id, id.gossip_advertise_addr))
    };
    let states: Vec<_> = states.iter().filter(|(id, _)| admitted(id)).collect();
    memory.report_foreign_addrs(&states);
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let dead: HashSet<&ChitchatId> = chitchat.dead_nodes().collect();
    let still_alive = |id: &ChitchatId| {
        memory
            .heartbeats
            .advanced_within(id, min_failure_timeout, now)
    };
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
pub(crate) async fn run_membership(
    chitchat: Arc<AsyncMutex<Chitchat>>,
    mut memory: ViewMemory,
    timings: Timings,
    view_tx: watch::Sender<Arc<MembershipView>>,
    mut shutdown: watch::Receiver<bool>,
    auth: Arc<PeerAuth>,
) {
    let (mut live_rx, me) = {
        let chitchat = chitchat.lock().await;
        (
            chitchat.live_nodes_watcher(),
            chitchat.self_chitchat_id().clone(),
        )
    };
    let mut superseded_by = None;
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
            &mut memory,
            min_failure_timeout,
            &auth,
        );
        warn_if_superseded(&view, &me, &mut superseded_by);
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

/// Logs (once per newcomer) that a newer incarnation of this node's id is live, so the
/// cluster lists that one and not this process: this process was cut off or stalled while
/// its id was started again elsewhere, and should be stopped.
fn warn_if_superseded(view: &MembershipView, me: &ChitchatId, warned: &mut Option<u64>) {
    let Ok(node_id) = me.node_id.parse() else {
        return;
    };
    let Some(newer) = view.newer_incarnation(node_id, me.generation_id) else {
        return;
    };
    if *warned != Some(newer.generation) {
        warn!(
            node_id,
            newer = %newer.member.public_addr,
            "a newer incarnation of this node id is live: the cluster lists it instead of this \
             process, which should be stopped (DatacakeHandle::superseded_by)"
        );
        *warned = Some(newer.generation);
    }
}

/// With TLS, the view lists a member only at the address the member proved itself.
#[cfg(all(test, feature = "certs"))]
mod tls_tests {
    use std::time::Duration;

    use chitchat::{ChitchatId, VersionedValue};

    use crate::certs::ClusterCa;
    use crate::membership::KEY_PUBLIC_ADDR;
    use crate::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder, NodeId};

    /// Generous bound for convergence on a loaded machine.
    const CONVERGE: Duration = Duration::from_secs(20);

    /// Where `node` lists node 2, if it does.
    fn two_listed_at(node: &DatacakeNode) -> Option<std::net::SocketAddr> {
        node.live_members()
            .into_iter()
            .find(|m| m.node_id == 2)
            .map(|m| m.public_addr)
    }

    /// Node 3, gone rogue, relays a newer version of node 2's key/values naming its own
    /// address as node 2's. chitchat applies a newer version whoever relays it, but no view
    /// may list node 2 there: calls meant for node 2 would reach node 3 (and fail its
    /// certificate check).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_cannot_move_another_member_to_its_own_address() {
        let ca = ClusterCa::generate("c").unwrap();
        let local = "127.0.0.1:0".parse().unwrap();
        let start = |id: NodeId, seeds: Vec<String>| {
            DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
                .with_cluster_id("c")
                .with_gossip_interval(Duration::from_millis(50))
                .with_phi_threshold(50.0)
                .with_tls(ca.node_tls(id))
                .connect()
        };
        let one = start(1, vec![]).await.unwrap();
        let seed = vec![one.me().public_addr.to_string()];
        let two = start(2, seed.clone()).await.unwrap();
        let three = start(3, seed).await.unwrap();
        test_helper::wait_for("every node to list nodes 1, 2 and 3", CONVERGE, || async {
            [&one, &two, &three]
                .iter()
                .all(|n| n.live_members().len() == 3)
        })
        .await;

        let real = two.me().public_addr;
        let forged = three.me().public_addr;
        let two_id = ChitchatId::new("2".to_string(), two.generation(), real);
        three
            .with_chitchat(|c| {
                let state = c.node_state(&two_id).expect("node 3 knows node 2");
                let version = state.max_version() + 1;
                let last_gc_version = state.last_gc_version();
                let key_values: Vec<(String, VersionedValue)> = state
                    .key_values_including_deleted()
                    .map(|(key, value)| {
                        let mut value = value.clone();
                        if key == KEY_PUBLIC_ADDR {
                            value.value = forged.to_string();
                            value.version = version;
                        }
                        (key.to_string(), value)
                    })
                    .collect();
                c.reset_node_state_if_update(
                    &two_id,
                    key_values.into_iter(),
                    version,
                    last_gc_version,
                );
            })
            .await
            .unwrap();

        // Node 1 took the forgery from node 3's gossip, and its view changed since.
        test_helper::wait_for("node 1 to take the forgery", CONVERGE, || async {
            let relayed = one
                .with_chitchat(|c| {
                    c.node_state(&two_id)
                        .and_then(|s| s.get(KEY_PUBLIC_ADDR))
                        .map(str::to_owned)
                })
                .await
                .flatten();
            relayed == Some(forged.to_string()) && two_listed_at(&one) != Some(real)
        })
        .await;
        assert_eq!(
            two_listed_at(&one),
            None,
            "node 1 lists node 2 at an address node 2 never proved (node 3's is {forged})"
        );
        for node in [three, two, one] {
            node.shutdown().await;
        }
    }
}
