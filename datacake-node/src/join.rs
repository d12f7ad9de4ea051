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
    /// fresh gossip arrives. A heartbeat is whatever a peer's digest says, up to `u64::MAX`,
    /// so they add up in a `u128`, which no sum of `u64`s this side of 2^64 nodes overflows.
    pub(crate) peer_heartbeats: u128,
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
            .map(|(_, state)| u128::from(u64::from(state.heartbeat())))
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use datacake_rpc::{Channel, RpcClient};

    use crate::gossip_check::wire::{self, DigestEntry};
    use crate::transport::{GossipPacket, GossipService};
    use crate::{ConnectionConfig, DatacakeNodeBuilder};

    /// A heartbeat is whatever a peer's digest says, up to `u64::MAX`: peers' heartbeats
    /// add up past it without overflowing (a panic in debug builds; in release a sum that
    /// wrapped while joining stayed below the last one seen: no fresh gossip counted).
    #[tokio::test]
    async fn heartbeats_at_the_top_of_the_range_add_up() {
        let local = "127.0.0.1:0".parse().unwrap();
        let node =
            DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
                .with_cluster_id("c")
                .connect()
                .await
                .unwrap();
        let peer = |node_id, port, heartbeat| DigestEntry {
            node_id,
            generation: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            heartbeat,
            max_version: 0,
        };
        let syn = wire::syn_v0("c", &[peer("2", 2, u64::MAX), peer("3", 3, 1)]);
        let client = RpcClient::<GossipService>::new(Channel::connect(node.me().public_addr));
        let packet = GossipPacket {
            node_id: 9,
            from: "127.0.0.1:9".to_string(),
            payload: syn,
        };
        // chitchat answers a SYN once it took the digest's heartbeats.
        let answer = client.send(&packet).await.unwrap();
        assert!(!answer.reply.is_empty(), "the SYN was answered");

        let snapshot = node.join_snapshot().await;
        assert_eq!(snapshot.known_peers, 2);
        assert_eq!(snapshot.peer_heartbeats, u128::from(u64::MAX) + 1);
        node.shutdown().await;
    }
}
