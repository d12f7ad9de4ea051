use std::time::Duration;

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{Consistency, Storage};

use crate::fixtures::{shutdown, start_node_with, wait_converged, wait_for_membership, CONVERGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_once_every_member_observed_them() {
    let quick = |ext: datacake_eventual_consistency::EventuallyConsistentStoreExtension<
        MemStore,
    >| { ext.with_tombstone_grace(Duration::from_millis(50)) };
    let first = start_node_with(1, Vec::new(), MemStore::new(), quick).await;
    let seed = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start_node_with(id, seed.clone(), MemStore::new(), quick).await);
    }
    wait_for_membership(&nodes, 1..=3).await;

    let h = nodes[0].handle();
    h.put_many("ks", (0..100).map(|i| (i, "v")), Consistency::All)
        .await
        .unwrap();
    h.del_many("ks", 0..50, Consistency::All).await.unwrap();
    // Something newer than the tombstones, so the purge watermark can rise above them.
    nodes[1]
        .handle()
        .put("ks", 1_000, "newer", Consistency::All)
        .await
        .unwrap();

    test_helper::wait_for("every node purges the tombstones", CONVERGE, || async {
        let mut purged = true;
        for node in &nodes {
            let held = node
                .handle()
                .iter_metadata("ks")
                .iter()
                .filter(|m| m.2)
                .count();
            let stored = node
                .storage
                .iter_metadata("ks")
                .await
                .unwrap()
                .iter()
                .filter(|m| m.2)
                .count();
            purged &= held == 0 && stored == 0;
        }
        purged
    })
    .await;
    wait_converged("converged after the purge", &nodes, "ks").await;
    for node in &nodes {
        assert!(node
            .handle()
            .get_many("ks", 0..50)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            node.handle().get_many("ks", 0..2_000).await.unwrap().len(),
            51
        );
    }
    nodes.reverse();
    shutdown(nodes).await;
}
