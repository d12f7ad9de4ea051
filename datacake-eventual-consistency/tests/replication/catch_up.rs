use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{Consistency, Storage};

use crate::fixtures::{
    cluster, shutdown, start_node, wait_converged, wait_for_membership, wait_until_gone,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_writes_catches_up() {
    let mut nodes = cluster(2).await;
    let h = nodes[0].handle();
    h.put_many(
        "ks",
        (0..500).map(|i| (i, format!("v{i}"))),
        Consistency::All,
    )
    .await
    .unwrap();
    h.del_many("ks", 0..50, Consistency::All).await.unwrap();
    h.put("other", 1, "x", Consistency::All).await.unwrap();

    let late = start_node(3, vec![nodes[0].addr()], MemStore::new()).await;
    nodes.push(late);
    wait_for_membership(&nodes, 1..=3).await;
    wait_converged("late node catches up on ks", &nodes, "ks").await;
    wait_converged("late node catches up on other", &nodes, "other").await;
    assert_eq!(nodes[2].storage.len("ks"), 450);
    let stats = nodes[2].store.statistics();
    assert!(stats.keys_repaired >= 501, "{stats:?}");
    assert!(
        stats.repairs_run >= 1 && stats.repair_bytes_received > 0,
        "{stats:?}"
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_on_the_same_storage() {
    let mut nodes = cluster(3).await;
    nodes[0]
        .handle()
        .put_many("ks", (0..100).map(|i| (i, "before")), Consistency::All)
        .await
        .unwrap();

    let stopped = nodes.pop().expect("three nodes");
    let storage = stopped.storage.clone();
    drop(stopped.store);
    stopped.node.shutdown().await;
    wait_until_gone(&nodes, 3).await;

    for i in 0..1_000u64 {
        let writer = &nodes[(i % 2) as usize];
        if i % 10 == 9 {
            writer
                .handle()
                .del("ks", i % 100, Consistency::One)
                .await
                .unwrap();
        } else {
            writer
                .handle()
                .put("ks", 100 + i, format!("during {i}"), Consistency::One)
                .await
                .unwrap();
        }
    }

    let restarted = start_node(3, vec![nodes[0].addr()], storage).await;
    nodes.push(restarted);
    wait_for_membership(&nodes, 1..=3).await;
    wait_converged("restarted node catches up", &nodes, "ks").await;
    let live = nodes[2].storage.len("ks");
    assert_eq!(live, nodes[0].storage.len("ks"));
    shutdown(nodes).await;
}

/// End to end over RPC: a node whose storage already holds all but 10 of 20,000 documents
/// takes only those 10, and the repair traffic is a small fraction of the keyspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_ships_only_what_differs() {
    const KEYS: u64 = 20_000;
    let first = crate::fixtures::start_node(1, Vec::new(), MemStore::new()).await;
    first
        .handle()
        .put_many(
            "ks",
            (0..KEYS).map(|i| (i, format!("doc {i}"))),
            Consistency::None,
        )
        .await
        .unwrap();

    // A second storage with the same documents, except 10 missing.
    let missing: Vec<u64> = (0..10).map(|i| i * 1_999 + 3).collect();
    let copy = MemStore::new();
    let mut docs = first
        .storage
        .multi_get("ks", (0..KEYS).collect())
        .await
        .unwrap();
    docs.retain(|d| !missing.contains(&d.id));
    copy.multi_put("ks", docs).await.unwrap();

    let second = start_node(2, vec![first.addr()], copy).await;
    let nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=2).await;
    wait_converged(
        "the second node takes the 10 missing documents",
        &nodes,
        "ks",
    )
    .await;
    let stats = nodes[1].store.statistics();
    assert_eq!(stats.keys_repaired, 10, "{stats:?}");
    // The whole key list alone would be about KEYS * 26 bytes; a repair round costs one
    // digest (4,096 buckets * 8 bytes) plus a few buckets and documents.
    let whole_key_list = KEYS * 26;
    assert!(
        stats.repair_bytes_received < whole_key_list / 4,
        "{} repair bytes for 10 differing keys",
        stats.repair_bytes_received
    );
    shutdown(nodes).await;
}
