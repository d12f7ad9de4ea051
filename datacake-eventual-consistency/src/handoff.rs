//! The hand-off on a graceful leave: before the node announces that it leaves, every live
//! peer pulls from it once, so a write only this node holds (acknowledged at `None`, its
//! replication batch failed, or written before the peers joined) outlives it.
//!
//! The leaving node sends each live peer a [`HandOff`] at the same time and waits for the
//! replies; a peer answers once it has run one complete repair round against the leaving
//! node (the periodic round,
//! [`Repairer::repair_from`](crate::anti_entropy::Repairer::repair_from)), so a reply means
//! the peer holds everything the leaving node held when the round read it. The whole
//! exchange runs in the node's leave hook, bounded by its leave timeout.
//!
//! A peer believes no more than the periodic repair does: it pulls only from a node that is
//! a live member in its own view (not itself), at that member's gossiped address, and the
//! caller must be that member (its certificate proves it with TLS; without, the caller's
//! host must be the member's). It runs one hand-off round at a time; further requests wait.

use std::time::Duration;

use datacake_node::DatacakeHandle;
use datacake_rpc::{Handler, Request, RpcClient, Status};
use tracing::{debug, info, warn};

use crate::messages::{HandOff, HandedOff};
use crate::service::StoreService;
use crate::storage::Storage;

/// The deadline of one hand-off call. The node's leave timeout bounds the whole hand-off
/// (and cancels the calls with it); this only keeps a call finite on its own.
const CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Asks every live peer to pull from this node and waits for their answers. The node's
/// leave timeout bounds it.
pub(crate) async fn hand_off<S: Storage>(node: DatacakeHandle) {
    if node.superseded_by().is_some() {
        // The cluster lists a restart under this id: peers would pull from it, not from
        // this process.
        return;
    }
    let me = node.me().node_id;
    let peers: Vec<_> = node
        .live_members()
        .into_iter()
        .filter(|m| m.node_id != me)
        .collect();
    if peers.is_empty() {
        return;
    }
    let asks = peers.iter().map(|peer| {
        let mut client = RpcClient::<StoreService<S>>::new(
            node.network()
                .get_or_connect_node(peer.node_id, peer.public_addr),
        );
        client.set_timeout(CALL_TIMEOUT);
        let request = HandOff {
            clock: node.clock().get_time(),
            node_id: me,
        };
        async move { (peer, client.send(&request).await) }
    });
    let mut handed = 0;
    for (peer, outcome) in futures::future::join_all(asks).await {
        match outcome.and_then(|reply| reply.into_inner().deserialize_view()) {
            Ok(reply) => {
                handed += 1;
                debug!(
                    node_id = peer.node_id,
                    repaired = reply.repaired,
                    "a peer pulled before the leave"
                );
            }
            Err(error) => {
                warn!(node_id = peer.node_id, peer = %peer.public_addr, %error, "a peer did not pull before the leave");
            }
        }
    }
    info!(
        peers = peers.len(),
        handed, "hand-off before the leave done"
    );
}

#[async_trait::async_trait]
impl<S: Storage> Handler<HandOff> for StoreService<S> {
    type Reply = HandedOff;

    fn path() -> &'static str {
        "hand-off"
    }

    async fn on_message(&self, request: Request<HandOff>) -> Result<HandedOff, Status> {
        let from = request.remote_addr();
        self.store
            .node
            .verify_caller(request.peer(), request.node_id.to_native())?;
        // With TLS the certificate proved the caller; without, its address's host must be
        // the member's (its port is an ephemeral one).
        let proven = request.peer().is_some();
        let request = request.into_inner().deserialize_view()?;
        self.register(request.clock, from)?;
        let leaving = self
            .store
            .node
            .live_members()
            .into_iter()
            .filter(|m| m.node_id != self.store.node.me().node_id)
            .find(|m| m.node_id == request.node_id && (proven || m.public_addr.ip() == from.ip()))
            .ok_or_else(|| {
                Status::invalid_payload(format!(
                    "hand-off from {from}, which is not live peer {}",
                    request.node_id
                ))
            })?;
        let _turn = self
            .hand_off_turn
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the store is stopping"))?;
        let round = self.store.counted_round(&leaving).await.map_err(|error| {
            Status::internal(format!(
                "pulling from node {}: {}",
                leaving.node_id,
                datacake_rpc::error_chain(&error)
            ))
        })?;
        info!(
            node_id = leaving.node_id,
            repaired = round.repaired,
            "pulled from a leaving node"
        );
        Ok(HandedOff {
            clock: self.now(),
            repaired: round.repaired as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use datacake_rpc::ErrorCode;

    use super::*;
    use crate::testing::store_and_bare_peer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hand_off_is_refused_unless_the_caller_is_another_live_member() {
        let (a, store, b) = store_and_bare_peer(1 << 20).await;
        let client = RpcClient::<StoreService<crate::test_utils::MemStore>>::new(
            b.network().get_or_connect_node(1, a.me().public_addr),
        );
        // Node 9 is no member; node 1 is the receiver itself.
        for claimed in [9, 1] {
            let status = client
                .send(&HandOff {
                    clock: b.clock().get_time(),
                    node_id: claimed,
                })
                .await
                .expect_err("refused");
            assert_eq!(status.code(), ErrorCode::InvalidPayload, "{status:?}");
        }
        // Node 2 is a live peer, but runs no store to pull from: the round fails.
        let status = client
            .send(&HandOff {
                clock: b.clock().get_time(),
                node_id: 2,
            })
            .await
            .expect_err("nothing to pull from");
        assert_eq!(status.code(), ErrorCode::Internal, "{status:?}");
        assert_eq!(store.statistics().failures, 1);
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }
}
