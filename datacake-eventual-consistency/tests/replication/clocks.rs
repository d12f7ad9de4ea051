//! Skewed clocks: a node whose clock runs ahead of most peers' takes no writes; one peer
//! whose clock runs slow does not stop the others.

use std::sync::atomic::{AtomicU64, Ordering};

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{Consistency, StoreError};
use datacake_node::DatacakeNodeBuilder;

use crate::fixtures::{shutdown, start_node_full, wait_converged, wait_for_membership, CONVERGE};

/// Nodes 1 and 2 over `MemStore`, node 3 with its clock shifted by `offset_millis`.
async fn cluster_with_node_3_at(offset_millis: i64) -> Vec<crate::fixtures::TestNode> {
    let first = start_node_full(1, Vec::new(), MemStore::new(), |b| b, |e| e).await;
    let seeds = vec![first.addr()];
    let second = start_node_full(2, seeds.clone(), MemStore::new(), |b| b, |e| e).await;
    let shifted = move |b: DatacakeNodeBuilder| b.with_clock_offset(offset_millis);
    let third = start_node_full(3, seeds, MemStore::new(), shifted, |e| e).await;
    let nodes = vec![first, second, third];
    wait_for_membership(&nodes, 1..=3).await;
    nodes
}

/// Node 3's clock runs a minute ahead of both peers' (the drift bound is 5 s). Its peers
/// refuse its stamps, and a write it kept would win, once their clocks caught up, over
/// what they wrote meanwhile; so once it has read their clocks (a probe at the start of
/// each of its repair rounds) it refuses writes at every level, before storing anything, with `ClockAhead`.
/// Nodes 1 and 2 go on writing, and their writes reach node 3. (Before, node 3 took every
/// write at `None` and kept it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_ahead_of_most_peers_takes_no_writes() {
    let nodes = cluster_with_node_3_at(60_000).await;
    let fast = nodes[2].handle();
    let next = AtomicU64::new(0);
    let refused = AtomicU64::new(u64::MAX);
    test_helper::wait_for("node 3 refuses writes", CONVERGE, || async {
        let id = next.fetch_add(1, Ordering::SeqCst);
        match fast.put("ks", id, "fast", Consistency::None).await {
            Ok(()) => false,
            Err(StoreError::ClockAhead { behind, live, by }) => {
                assert_eq!((behind, live), (2, 2));
                assert!(by.as_secs() >= 50, "{by:?}");
                refused.store(id, Ordering::SeqCst);
                true
            }
            Err(other) => panic!("refused for another reason: {other}"),
        }
    })
    .await;
    let refused = refused.load(Ordering::SeqCst);
    assert_eq!(nodes[2].store.statistics().clock_fenced, 1);
    assert!(
        nodes[2].storage.get_doc("ks", refused).is_none(),
        "a refused write stored nothing"
    );
    for level in [Consistency::None, Consistency::One, Consistency::All] {
        assert!(
            matches!(
                fast.put("ks", 1_000, "fast", level).await,
                Err(StoreError::ClockAhead { .. })
            ),
            "{level:?}"
        );
        assert!(matches!(
            fast.del("ks", 0, level).await,
            Err(StoreError::ClockAhead { .. })
        ));
    }
    assert_eq!(nodes[2].store.statistics().clock_fenced, 7);
    assert_eq!(nodes[0].store.statistics().clock_fenced, 0);

    nodes[0]
        .handle()
        .put("ks", 1_000, "on time", Consistency::Quorum)
        .await
        .unwrap();
    test_helper::wait_for("node 3 takes node 1's write", CONVERGE, || async {
        nodes[2]
            .storage
            .get_doc("ks", 1_000)
            .is_some_and(|d| d.data.as_ref() == b"on time")
    })
    .await;
    shutdown(nodes).await;
}

/// Node 3's clock runs a minute behind. It refuses its peers' stamps as too far ahead (its
/// own affair), but answers their clock probes: each of nodes 1 and 2 then sees one of its
/// two peers behind, which is not most of them, so both keep taking writes
/// (the fence is a majority's verdict, not any one peer's) and replicate them to each
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_whose_clock_runs_slow_fences_nobody() {
    let nodes = cluster_with_node_3_at(-60_000).await;
    // Node 3 refuses the peers' repair rounds, each begun with a probe of its clock: wait
    // for a few of each.
    test_helper::wait_for("nodes 1 and 2 read node 3's clock", CONVERGE, || async {
        nodes[..2]
            .iter()
            .all(|n| n.store.statistics().failures >= 2)
    })
    .await;
    for (i, node) in nodes[..2].iter().enumerate() {
        for (j, level) in [Consistency::None, Consistency::Quorum]
            .into_iter()
            .enumerate()
        {
            let id = (i * 10 + j) as u64;
            node.handle().put("ks", id, "v", level).await.unwrap();
        }
    }
    wait_converged("the writes reach nodes 1 and 2", &nodes[..2], "ks").await;
    assert_eq!(nodes[0].metadata("ks").len(), 4);
    shutdown(nodes).await;
}
