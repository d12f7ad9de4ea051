//! A graceful leave hands off what only the leaving node holds: its peers pull from it before
//! the leave is announced.

use std::time::Duration;

use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
use datacake_eventual_consistency::Consistency;
use datacake_node::DatacakeNodeBuilder;

use crate::fixtures::*;

/// Repair would bring the writes to the peers on its own: with an hour between rounds (the
/// first runs as the store starts, before anything is written), the hand-off is the only
/// way they can get them.
fn without_periodic_repair<S: datacake_eventual_consistency::Storage>(
    extension: Extension<S>,
) -> Extension<S> {
    extension.with_repair_interval(Duration::from_secs(3_600))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_off_the_writes_no_peer_holds() {
    hand_off_writes_no_peer_holds(None).await;
}

/// The same over mutual TLS: the peers believe the leaving node's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_off_the_writes_no_peer_holds_with_tls() {
    let ca = datacake_node::certs::ClusterCa::generate("secure").unwrap();
    hand_off_writes_no_peer_holds(Some(&ca)).await;
}

/// Node 1 writes while nodes 2 and 3 refuse its replication batches, then leaves: both must
/// end up with what it held.
async fn hand_off_writes_no_peer_holds(ca: Option<&datacake_node::certs::ClusterCa>) {
    let secure = |id: u32, node: DatacakeNodeBuilder| match ca {
        None => node,
        Some(ca) => secured(ca, id, node),
    };
    let leaving = start_node_full(
        1,
        Vec::new(),
        MemStore::new(),
        |node| secure(1, node).with_leave_timeout(Duration::from_secs(10)),
        without_periodic_repair,
    )
    .await;
    let mut peers = Vec::new();
    for id in [2, 3] {
        let storage = FaultyStorage::new(MemStore::new());
        peers.push(
            start_node_full(
                id,
                vec![leaving.addr()],
                storage,
                |node| secure(id, node),
                without_periodic_repair,
            )
            .await,
        );
    }
    wait_for_membership(&peers, 1..=3).await;
    leaving.node.wait_for_nodes(1..=3, CONVERGE).await.unwrap();

    // Acknowledged at `None` while the peers' disks refuse writes: their replication batches
    // fail and are not retried.
    for peer in &peers {
        peer.storage.fail_writes(true);
    }
    let writes = leaving.handle();
    let failed_batches = |n: u64| {
        let leaving = &leaving;
        async move {
            test_helper::wait_for("the replication batches to fail", CONVERGE, || async {
                leaving.store.statistics().failures >= n
            })
            .await;
        }
    };
    writes
        .put_many("ks", (0..200u64).map(|k| (k, "v")), Consistency::None)
        .await
        .unwrap();
    failed_batches(2).await;
    writes
        .del_many("ks", 0..20, Consistency::None)
        .await
        .unwrap();
    failed_batches(4).await;
    for peer in &peers {
        peer.storage.fail_writes(false);
        assert!(
            peer.metadata("ks").is_empty(),
            "a refused batch was applied"
        );
    }
    let held = leaving.metadata("ks");
    assert_eq!(held.len(), 200);

    // The store stays up while its node leaves: the hand-off needs its service.
    let TestNode { node, store, .. } = leaving;
    node.shutdown().await;
    drop(store);

    test_helper::wait_for("both peers hold what node 1 held", CONVERGE, || async {
        peers.iter().all(|p| p.metadata("ks") == held)
    })
    .await;
    let documents = peers[0]
        .handle()
        .get_many_local("ks", 0..200)
        .await
        .unwrap();
    assert_eq!(documents.len(), 180, "the documents, deletes applied");
    shutdown(peers).await;
}
