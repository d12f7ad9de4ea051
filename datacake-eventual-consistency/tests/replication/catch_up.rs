use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore, ReadHook};
use datacake_eventual_consistency::{Consistency, Document, Storage};

use crate::fixtures::{
    cluster, shutdown, start_node, start_node_full, wait_converged, wait_for_membership,
    wait_until_gone, Extension, CONVERGE,
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
    // A repair counts what it applied once the apply returns, just after the documents
    // became visible: wait for the count rather than read it at once.
    let late = &nodes[2];
    test_helper::wait_for(
        "the late node counts what it repaired",
        CONVERGE,
        || async { late.store.statistics().keys_repaired >= 501 },
    )
    .await;
    let stats = nodes[2].store.statistics();
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
    let second = &nodes[1];
    test_helper::wait_for(
        "the second node counts what it repaired",
        CONVERGE,
        || async { second.store.statistics().keys_repaired >= 10 },
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

/// Node 2 serves every read slowly (each repair call well inside the RPC timeout, but a
/// round over its 65,536 documents takes about a minute): node 1 still takes, meanwhile,
/// a write only node 3 holds (acknowledged at `None` while node 1's disk refused its
/// replication batch), because its rounds with different peers run side by side. (Before,
/// node 1 repaired from its peers one after the other, and the round with node 2 held up
/// the one with node 3 until it ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_does_not_hold_back_repair_from_the_others() {
    const SLOW: Duration = Duration::from_millis(400);
    const BULK: u64 = 64 * 1024;
    fn quiet<S: Storage>(ext: Extension<S>) -> Extension<S> {
        ext.with_repair_interval(Duration::from_secs(3_600))
    }
    // Nodes 2 and 3 run no repair rounds of their own (the first, at start, finds no
    // peer): node 1's rounds are the only repair, and its pulls the only reads of node 2.
    let third = start_node_full(3, Vec::new(), MemStore::new(), |b| b, quiet).await;
    let first = start_node_full(
        1,
        vec![third.addr()],
        FaultyStorage::new(MemStore::new()),
        |b| b,
        |ext| ext,
    )
    .await;
    first.node.wait_for_nodes([1, 3], CONVERGE).await.unwrap();
    third.node.wait_for_nodes([1, 3], CONVERGE).await.unwrap();

    first.storage.fail_writes(true);
    third
        .handle()
        .put("ks", 1, "only on node 3", Consistency::None)
        .await
        .unwrap();
    test_helper::wait_for("the batch to node 1 fails", CONVERGE, || async {
        third.store.statistics().failures >= 1
    })
    .await;

    // Node 2 holds many documents node 1 lacks, reads them slowly, and refuses writes (so
    // it never takes node 3's write either).
    let bulk = MemStore::new();
    let stamp = HLCTimestamp::now(2);
    bulk.multi_put(
        "bulk",
        (0..BULK).map(|id| Document::new(id, stamp, "x")).collect(),
    )
    .await
    .unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let hook: ReadHook = {
        let reads = reads.clone();
        Arc::new(move || {
            reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(tokio::time::sleep(SLOW))
        })
    };
    let storage = FaultyStorage::with_read_hook(bulk, hook);
    storage.fail_writes(true);
    let second = start_node_full(2, vec![third.addr()], storage, |b| b, quiet).await;
    let nodes = [&first.node, &second.node, &third.node];
    for node in nodes {
        node.wait_for_nodes(1..=3, CONVERGE).await.unwrap();
    }
    test_helper::wait_for("node 1 pulls from node 2", CONVERGE, || async {
        reads.load(Ordering::SeqCst) >= 1
    })
    .await;
    first.storage.fail_writes(false);

    test_helper::wait_for("node 1 takes node 3's write", CONVERGE, || async {
        first.storage.inner().get_doc("ks", 1).is_some()
    })
    .await;
    assert!(
        first.storage.inner().len("bulk") < BULK as usize,
        "the round with node 2 is still under way"
    );
    drop(second.crash());
    drop(first.crash());
    drop(third.crash());
}
