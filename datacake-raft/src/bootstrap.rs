//! The bootstrap rule (see [`RaftConfig`](crate::RaftConfig)): once `bootstrap_expect`
//! members are live in gossip, the lowest of the `bootstrap_expect` lowest ids initialises the
//! cluster with exactly those — only if every one of them answers a probe saying it is in no
//! cluster (nor about to initialise one) and sees the same `bootstrap_expect` lowest ids.
//! Agreement on the set guards against nodes whose gossip views still differ (e.g. more
//! nodes than expected starting at once) picking overlapping sets; the "about to initialise"
//! flag closes the window between an initiator's probe and its `initialize`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{ClusterMember, DatacakeHandle, NodeId};
use openraft::BasicNode;
use tracing::{debug, info, warn};

use crate::network::{ask, ProbePacket, ProbeReply};
use crate::types::{Raft, RaftNodeId};

/// The members this node should initialise the cluster with, if the rule says it is the one
/// to do it now: `expect` live members are visible and `me` is the lowest of the `expect`
/// lowest ids.
pub(crate) fn initial_members(
    me: NodeId,
    expect: usize,
    live: &[ClusterMember],
) -> Option<Vec<ClusterMember>> {
    if expect == 0 || live.len() < expect {
        return None;
    }
    let mut live = live.to_vec();
    live.sort_by_key(|m| m.node_id);
    live.truncate(expect);
    (live[0].node_id == me).then_some(live)
}

/// The `expect` lowest live ids, if at least `expect` members are live.
pub(crate) fn lowest(expect: usize, live: &[ClusterMember]) -> Option<Vec<NodeId>> {
    if expect == 0 || live.len() < expect {
        return None;
    }
    let mut ids: Vec<NodeId> = live.iter().map(|m| m.node_id).collect();
    ids.sort_unstable();
    ids.truncate(expect);
    Some(ids)
}

/// Whether a peer's probe reply lets `chosen` be initialised: it is in no cluster and sees
/// the same initial set.
pub(crate) fn agrees(chosen: &[NodeId], reply: &ProbeReply) -> bool {
    !reply.initialized && reply.initial == chosen
}

/// Runs the rule until this node is part of a cluster (initialised by itself or added by a
/// leader).
pub(crate) async fn run(
    raft: Raft,
    node: DatacakeHandle,
    expect: usize,
    interval: Duration,
    rpc_timeout: Duration,
    bootstrapping: Arc<AtomicBool>,
) {
    let me = node.me().node_id;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => return,
        }
        let Some(members) = initial_members(me, expect, &node.live_members()) else {
            continue;
        };
        // Announce the intent before probing, so a concurrent initiator whose set
        // includes this node backs off; withdraw it if the peers do not agree.
        bootstrapping.store(true, Ordering::SeqCst);
        if !peers_agree(&node, &members, expect, rpc_timeout).await {
            bootstrapping.store(false, Ordering::SeqCst);
            continue;
        }
        let nodes: BTreeMap<RaftNodeId, BasicNode> = members
            .iter()
            .map(|m| (RaftNodeId::from(m.node_id), BasicNode::new(m.public_addr)))
            .collect();
        let ids: Vec<NodeId> = members.iter().map(|m| m.node_id).collect();
        match raft.initialize(nodes).await {
            Ok(()) => info!(node_id = me, voters = ?ids, "initialised raft cluster"),
            Err(e) => warn!(node_id = me, error = %e, "raft initialisation refused"),
        }
        return;
    }
}

/// `true` if every other chosen member answered the probe, is in no cluster (nor about to
/// initialise one) and sees the same initial set. Otherwise this node asks again on the next
/// round — or, once a member is in a cluster, waits to be added to it.
async fn peers_agree(
    node: &DatacakeHandle,
    members: &[ClusterMember],
    expect: usize,
    timeout: Duration,
) -> bool {
    let me = node.me().node_id;
    let chosen: Vec<NodeId> = members.iter().map(|m| m.node_id).collect();
    for member in members.iter().filter(|m| m.node_id != me) {
        let probe = ProbePacket {
            expect: u64::try_from(expect).unwrap_or(u64::MAX),
        };
        let channel = node
            .network()
            .get_or_connect_node(member.node_id, member.public_addr);
        let reply = ask(channel, &probe, timeout).await;
        match reply {
            Ok(reply) if agrees(&chosen, &reply) => {}
            Ok(reply) => {
                debug!(node_id = me, peer = member.node_id, reply = ?reply, "peer does not agree to bootstrap");
                return false;
            }
            Err(status) => {
                debug!(node_id = me, peer = member.node_id, error = %status, "bootstrap probe failed");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[NodeId]) -> Vec<ClusterMember> {
        ids.iter()
            .map(|id| {
                ClusterMember::new(
                    *id,
                    format!("127.0.0.1:{}", 9000 + id).parse().unwrap(),
                    "dc",
                )
            })
            .collect()
    }

    fn ids(members: Option<Vec<ClusterMember>>) -> Option<Vec<NodeId>> {
        members.map(|m| m.iter().map(|m| m.node_id).collect())
    }

    #[test]
    fn waits_until_enough_members_are_visible() {
        assert_eq!(ids(initial_members(1, 3, &members(&[1, 2]))), None);
        assert_eq!(
            ids(initial_members(1, 3, &members(&[2, 1, 3]))),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn only_the_lowest_id_initialises() {
        assert_eq!(ids(initial_members(2, 3, &members(&[1, 2, 3]))), None);
        assert_eq!(ids(initial_members(3, 3, &members(&[1, 2, 3]))), None);
    }

    #[test]
    fn takes_exactly_the_expected_lowest_ids() {
        assert_eq!(
            ids(initial_members(1, 3, &members(&[5, 1, 4, 2]))),
            Some(vec![1, 2, 4])
        );
        // A higher id is not among the lowest `expect`, so it never initialises.
        assert_eq!(ids(initial_members(5, 3, &members(&[5, 1, 4, 2]))), None);
    }

    #[test]
    fn peers_must_be_pristine_and_see_the_same_initial_set() {
        let chosen = [1, 2, 3];
        let reply = |initialized, initial: &[NodeId]| ProbeReply {
            initialized,
            initial: initial.to_vec(),
        };
        assert!(agrees(&chosen, &reply(false, &[1, 2, 3])));
        assert!(
            !agrees(&chosen, &reply(true, &[1, 2, 3])),
            "already in a cluster"
        );
        assert!(
            !agrees(&chosen, &reply(false, &[2, 3, 4])),
            "a different view"
        );
        assert!(!agrees(&chosen, &reply(false, &[])), "sees too few members");
        assert_eq!(lowest(3, &members(&[4, 2, 9, 1])), Some(vec![1, 2, 4]));
        assert_eq!(lowest(3, &members(&[4, 2])), None);
    }

    #[test]
    fn zero_expected_never_initialises() {
        assert_eq!(ids(initial_members(1, 0, &members(&[1]))), None);
    }
}
