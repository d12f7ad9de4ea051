//! Consistency levels under faults: any k of the replicas acknowledge, refusals fail fast,
//! and a level counts the members the cluster knows, not only the live ones.

use std::time::Duration;

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{Consistency, ConsistencyError, StoreError};
use datacake_node::DatacakeNodeBuilder;
use datacake_rpc::Status;

use crate::fixtures::{
    shutdown, start_node, start_node_full, start_stand_in, stub_store_service, wait_for_membership,
    Extension, CONVERGE,
};

/// A failure detector slow enough that a crashed node is still held live for the whole test.
fn slow_detector(builder: DatacakeNodeBuilder) -> DatacakeNodeBuilder {
    builder.with_min_failure_timeout(Duration::from_secs(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_succeed_on_any_ack_while_a_crashed_peer_is_still_held_live() {
    let short = |ext: Extension| ext.with_write_timeout(Duration::from_secs(2));
    let first = start_node_full(1, Vec::new(), MemStore::new(), slow_detector, short).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start_node_full(id, seeds.clone(), MemStore::new(), slow_detector, short).await);
    }
    wait_for_membership(&nodes, 1..=3).await;

    let crashed = nodes.pop().expect("three nodes");
    let _storage = crashed.crash();
    for i in 0..6 {
        nodes[0]
            .handle()
            .put("ks", i, "v", Consistency::Quorum)
            .await
            .unwrap_or_else(|e| panic!("write {i}: node 2 acknowledges, so Quorum holds: {e}"));
    }
    assert!(
        nodes[0].node.live_members().iter().any(|m| m.node_id == 3),
        "the test needs node 3 still held live"
    );
    for i in 0..6 {
        assert!(
            nodes[1].storage.get_doc("ks", i).is_some(),
            "node 2 holds {i}"
        );
    }
    shutdown(nodes).await;
}

stub_store_service!(
    /// Stands in for the store's service on a node and refuses every replication batch.
    Refusing,
    "replicate",
    Err(Status::internal("disk full"))
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_replica_fails_the_write_at_once_naming_the_peer_and_its_error() {
    let patient = |ext: Extension| ext.with_write_timeout(Duration::from_secs(30));
    let first = start_node_full(1, Vec::new(), MemStore::new(), |b| b, patient).await;
    let second = start_node_full(2, vec![first.addr()], MemStore::new(), |b| b, patient).await;
    let refusing = start_stand_in(3, vec![first.addr()], Refusing).await;
    let refusing_addr = refusing.me().public_addr.to_string();
    let nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=3).await;

    let error = nodes[0]
        .handle()
        .put("ks", 1, "x", Consistency::All)
        .await
        .expect_err("node 3 refuses, so All cannot be met");
    match &error {
        StoreError::ReplicaFailed {
            node_id: 3,
            peer,
            source,
            ..
        } => {
            assert_eq!(peer.to_string(), refusing_addr);
            assert_eq!(source.message(), "disk full");
        }
        other => panic!("expected node 3's refusal, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&refusing_addr), "{message}");
    refusing.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_live_node_of_three_refuses_every_level_but_none() {
    let first = start_node(1, Vec::new(), MemStore::new()).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start_node(id, seeds.clone(), MemStore::new()).await);
    }
    wait_for_membership(&nodes, 1..=3).await;
    let others = nodes.split_off(1);
    shutdown(others).await;
    test_helper::wait_for("node 1 sees the others gone", CONVERGE, || async {
        nodes[0].node.live_members().len() == 1
    })
    .await;

    let h = nodes[0].handle();
    for level in [
        Consistency::One,
        Consistency::Quorum,
        Consistency::LocalQuorum,
        Consistency::EachQuorum,
        Consistency::All,
    ] {
        match h.put("ks", 1, "alone", level).await {
            Err(StoreError::Consistency(ConsistencyError::NotEnoughNodes { .. })) => {}
            other => panic!("{level}: expected NotEnoughNodes, got {other:?}"),
        }
    }
    assert!(
        nodes[0].storage.get_doc("ks", 1).is_none(),
        "a refused write is not applied locally"
    );
    h.put("ks", 1, "alone", Consistency::None)
        .await
        .expect("None needs nobody");
    shutdown(nodes).await;
}

/// A node given a seed that never answers starts alone: it knows no member to count, so it
/// must not meet `Quorum` or `All` by itself (a node that knows it would count it, and a
/// quorum read there could miss the write). Once a peer joins, levels count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_seeds_never_answered_meets_no_level_alone() {
    let silent_seed = format!("127.0.0.1:{}", test_helper::free_ports(1)[0]);
    let quick_join = |b: DatacakeNodeBuilder| b.with_join_timeout(Duration::from_millis(200));
    let first = start_node_full(1, vec![silent_seed], MemStore::new(), quick_join, |e| e).await;
    assert!(first.node.expects_peers());
    let h = first.handle();
    for level in [Consistency::Quorum, Consistency::All, Consistency::One] {
        match h.put("ks", 1, "v", level).await {
            Err(StoreError::Consistency(ConsistencyError::NotJoined)) => {}
            other => panic!("{level:?} write: expected NotJoined, got {other:?}"),
        }
        match h.get("ks", 1, level).await {
            Err(StoreError::Consistency(ConsistencyError::NotJoined)) => {}
            other => panic!("{level:?} read: expected NotJoined, got {other:?}"),
        }
    }
    assert_eq!(h.get_local("ks", 1).await.unwrap(), None, "nothing written");
    h.put("ks", 1, "v", Consistency::None).await.unwrap();

    let second = start_node(2, vec![first.addr()], MemStore::new()).await;
    let nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=2).await;
    h.put("ks", 2, "w", Consistency::All).await.unwrap();
    assert!(nodes[1]
        .handle()
        .get_local("ks", 2)
        .await
        .unwrap()
        .is_some());
    shutdown(nodes).await;
}
