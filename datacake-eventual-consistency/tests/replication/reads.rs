//! Reads at a consistency level: the newest version among the replicas asked, and read
//! repair of the stale ones.

use std::time::Duration;

use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
use datacake_eventual_consistency::{Consistency, ConsistencyError, StoreError};

use crate::fixtures::{
    add_store, shutdown, start_node_full, start_stand_in, stub_store_service, wait_for_membership,
    wait_for_views, Extension, TestNode, CONVERGE,
};

type Faulty = FaultyStorage<MemStore>;

/// Repair only once an hour, after the first round: a stale replica stays stale unless a
/// read repairs it.
fn rare_repair(ext: Extension<Faulty>) -> Extension<Faulty> {
    ext.with_repair_interval(Duration::from_secs(3_600))
}

/// Three nodes whose storage writes can be switched off. Their stores start once the three
/// nodes see each other, so each store's first repair round (its repair task's first tick is
/// at once, the next an hour later) covers both peers, and the cluster is returned once
/// those rounds ended: no repair runs behind a test's back, and a replica a test left stale
/// stays stale until a read repairs it. (With each store started with its node, a first
/// round could still be under way, or start late on a loaded machine, and fix node 3
/// between a test's check that it is stale and its read: CI saw that once.)
async fn cluster() -> Vec<TestNode<Faulty>> {
    let first = test_helper::node::builder(1, Vec::new())
        .connect()
        .await
        .expect("node connects");
    let seeds = vec![first.me().public_addr.to_string()];
    let mut connected = vec![first];
    for id in 2..=3 {
        let node = test_helper::node::builder(id, seeds.clone())
            .connect()
            .await
            .expect("node connects");
        connected.push(node);
    }
    wait_for_views(&connected, 1..=3).await;
    let mut nodes = Vec::new();
    for node in connected {
        nodes.push(add_store(node, FaultyStorage::new(MemStore::new()), rare_repair).await);
    }
    for node in &nodes {
        let store = &node.store;
        test_helper::wait_for(
            "each store's first repair rounds, one per peer, to end",
            CONVERGE,
            || async {
                let s = store.statistics();
                s.repairs_run + s.failures >= 2
            },
        )
        .await;
    }
    nodes
}

/// Runs `write` (to keyspace `ks`) with node 3's disk refusing writes, and switches it back
/// on only once node 3 has refused a write to `ks`: a Quorum write returns on node 2's
/// acknowledgement while its batch to node 3 may still be on the way, and that batch must
/// not land after the switch. (Any refused write would not do: node 3's store also writes
/// records of its own, such as of the members it saw.)
async fn missed_by_node_3(
    nodes: &[TestNode<Faulty>],
    write: impl std::future::Future<Output = ()>,
) {
    let storage = &nodes[2].storage;
    let before = storage.refused("ks");
    storage.fail_writes(true);
    write.await;
    test_helper::wait_for(
        "node 3 refuses the write",
        Duration::from_secs(10),
        || async { storage.refused("ks") > before },
    )
    .await;
    storage.fail_writes(false);
}

fn value(doc: Option<datacake_eventual_consistency::Document>) -> Option<Vec<u8>> {
    doc.map(|d| d.data.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_sees_the_latest_quorum_write_and_repairs_the_stale_replica() {
    let nodes = cluster().await;
    nodes[0]
        .handle()
        .put("ks", 1, "v1", Consistency::All)
        .await
        .unwrap();
    // Node 3's disk refuses writes: a Quorum write of v2 is acknowledged by node 2 alone,
    // and node 3 keeps v1.
    missed_by_node_3(&nodes, async {
        nodes[0]
            .handle()
            .put("ks", 1, "v2", Consistency::Quorum)
            .await
            .expect("node 2 acknowledges");
    })
    .await;
    let stale = nodes[2].handle();
    assert_eq!(
        value(stale.get_local("ks", 1).await.unwrap()),
        Some(b"v1".to_vec()),
        "node 3 is stale"
    );

    // Read through the stale node: its own copy plus one peer's, the newest wins.
    let read = stale.get("ks", 1, Consistency::Quorum).await.unwrap();
    assert_eq!(value(read), Some(b"v2".to_vec()));
    test_helper::wait_for(
        "the read repairs node 3",
        Duration::from_secs(10),
        || async { value(stale.get_local("ks", 1).await.unwrap()) == Some(b"v2".to_vec()) },
    )
    .await;
    assert!(nodes[2].store.statistics().read_repairs >= 1);

    // A delete is a version too: the newest tombstone reads as absent.
    missed_by_node_3(&nodes, async {
        nodes[0]
            .handle()
            .del("ks", 1, Consistency::Quorum)
            .await
            .unwrap();
    })
    .await;
    assert!(
        stale.get_local("ks", 1).await.unwrap().is_some(),
        "node 3 missed the delete"
    );
    assert_eq!(stale.get("ks", 1, Consistency::All).await.unwrap(), None);
    let many = stale
        .get_many("ks", [1, 1, 2], Consistency::Quorum)
        .await
        .unwrap();
    assert!(many.is_empty(), "{many:?}");
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_a_level_fail_like_writes() {
    let mut nodes = cluster().await;
    nodes[0]
        .handle()
        .put("ks", 1, "v", Consistency::All)
        .await
        .unwrap();
    let others = nodes.split_off(1);
    shutdown(others).await;
    test_helper::wait_for(
        "node 1 sees the others gone",
        Duration::from_secs(20),
        || async { nodes[0].node.live_members().len() == 1 },
    )
    .await;
    let h = nodes[0].handle();
    match h.get("ks", 1, Consistency::Quorum).await {
        Err(StoreError::Consistency(ConsistencyError::NotEnoughNodes { .. })) => {}
        other => panic!("expected NotEnoughNodes, got {other:?}"),
    }
    assert_eq!(
        value(h.get("ks", 1, Consistency::None).await.unwrap()),
        Some(b"v".to_vec()),
        "None reads the local copy"
    );
    shutdown(nodes).await;
}

stub_store_service!(
    /// Stands in for the store's service on a node and never answers a read.
    SilentReads,
    "read",
    futures::future::pending().await
);

/// A replica that takes reads and never answers (a slow disk, a stalled process) does not
/// stall `Quorum` reads while another replica can answer: the read asks it after a short
/// delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_does_not_stall_quorum_reads() {
    let patient = |ext: Extension| {
        ext.with_read_timeout(Duration::from_secs(30))
            .with_rpc_timeout(Duration::from_secs(30))
    };
    let first = start_node_full(1, Vec::new(), MemStore::new(), |b| b, patient).await;
    // Node 2, the lowest peer id, is every read's first choice.
    let silent = start_stand_in(2, vec![first.addr()], SilentReads).await;
    let third = start_node_full(3, vec![first.addr()], MemStore::new(), |b| b, patient).await;
    let nodes = vec![first, third];
    wait_for_membership(&nodes, 1..=3).await;

    let h = nodes[0].handle();
    h.put("ks", 1, "v", Consistency::Quorum)
        .await
        .expect("node 3 acknowledges");
    for _ in 0..3 {
        let read =
            tokio::time::timeout(Duration::from_secs(10), h.get("ks", 1, Consistency::Quorum))
                .await
                .expect("the read does not wait out its 30 s timeout")
                .unwrap();
        assert_eq!(value(read), Some(b"v".to_vec()));
    }
    silent.shutdown().await;
    shutdown(nodes).await;
}
