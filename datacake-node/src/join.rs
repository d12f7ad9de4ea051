//! What a joining node checks before it counts as joined: whether gossip reached it, and
//! whether another node claims its id ([`JoinSnapshot`], read by the builder's `connect`).

use std::collections::HashSet;

use chitchat::{Chitchat, ChitchatId};

use crate::membership::KEY_LEAVING;

/// What gossip told a joining node so far.
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

impl JoinSnapshot {
    /// How many other nodes gossip has told us of, and every other node claiming our id (not
    /// leaving) with its heartbeat and whether the failure detector holds it live.
    ///
    /// An incarnation of our id at our own public address is not another node: the address
    /// leads to our listener now, so its process is gone from it (a restart right after a
    /// crash, while peers still relay the crashed process's last heartbeats). Listed, it
    /// would look like a live duplicate.
    pub(crate) fn of(chitchat: &Chitchat) -> Self {
        let me = chitchat.self_chitchat_id().clone();
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let known_peers = chitchat
            .node_states()
            .keys()
            .filter(|id| **id != me)
            .count();
        let peer_heartbeats = chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| id.node_id != me.node_id)
            .map(|(_, state)| u64::from(state.heartbeat()))
            .sum();
        let same_id = chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| **id != me && id.node_id == me.node_id)
            .filter(|(id, _)| id.gossip_advertise_addr != me.gossip_advertise_addr)
            .filter(|(_, state)| state.get(KEY_LEAVING).is_none())
            .map(|(id, state)| SameIdNode {
                id: id.clone(),
                heartbeat: state.heartbeat().into(),
                live: live.contains(id),
            })
            .collect();
        Self {
            known_peers,
            peer_heartbeats,
            same_id,
        }
    }
}
