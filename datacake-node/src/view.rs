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
use crate::membership::{GossipedNode, HeartbeatTracker, MembershipView};

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
pub(crate) fn build_view(
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
pub(crate) async fn run_membership(
    chitchat: Arc<AsyncMutex<Chitchat>>,
    mut tracker: HeartbeatTracker<ChitchatId>,
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
            &mut tracker,
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
