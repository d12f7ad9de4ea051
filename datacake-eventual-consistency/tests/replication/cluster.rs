use std::time::Duration;

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{
    Consistency, ConsistencyError, EventuallyConsistentStoreExtension, StoreError,
};
use test_helper::node::StallableNode;

use crate::fixtures::{
    cluster, secured, shutdown, start_node, start_node_full, start_stand_in, stub_store_service,
    wait_converged, wait_for_membership, CONVERGE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_writes_are_visible_everywhere_on_return() {
    let nodes = cluster(3).await;
    let h = nodes[0].handle();
    h.put("ks", 1, "one", Consistency::All).await.unwrap();
    h.put_many("ks", (2..50).map(|i| (i, "x")), Consistency::All)
        .await
        .unwrap();
    for node in &nodes {
        let doc = node.handle().get_local("ks", 1).await.unwrap();
        assert_eq!(&doc.expect("replicated").data[..], b"one");
        assert_eq!(
            node.handle()
                .get_many_local("ks", 1..50)
                .await
                .unwrap()
                .len(),
            49
        );
    }
    for node in &nodes[1..] {
        // (Counted just after the documents became visible: wait for the count.)
        test_helper::wait_for("every document counted", CONVERGE, || async {
            let stats = node.store.statistics();
            stats.replicated + stats.keys_repaired >= 49
        })
        .await;
        let stats = node.store.statistics();
        // Each document arrived once: by the write fan-out, or by a repair round that won
        // the race.
        assert_eq!(stats.replicated + stats.keys_repaired, 49, "{stats:?}");
        assert_eq!(stats.writes, 0);
    }
    assert_eq!(nodes[0].store.statistics().writes, 49);

    // Every node holds the same entries on return, so the same metadata digest; a write
    // changes it, and an unknown keyspace has none.
    let digest = h.metadata_digest("ks").expect("ks is held");
    for node in &nodes {
        assert_eq!(node.handle().metadata_digest("ks"), Some(digest));
        assert_eq!(
            node.store.handle_with_keyspace("ks").metadata_digest(),
            Some(digest)
        );
    }
    assert_eq!(h.metadata_digest("never-written"), None);
    h.del("ks", 1, Consistency::All).await.unwrap();
    assert_ne!(
        h.metadata_digest("ks"),
        Some(digest),
        "a write changes the digest"
    );
    h.del_many("ks", 2..10, Consistency::All).await.unwrap();
    for node in &nodes {
        assert_eq!(node.handle().get_local("ks", 1).await.unwrap(), None);
        assert_eq!(
            node.handle()
                .get_many_local("ks", 1..50)
                .await
                .unwrap()
                .len(),
            40
        );
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_writes_converge() {
    let nodes = cluster(3).await;
    for (i, node) in nodes.iter().enumerate() {
        let base = i as u64 * 100;
        node.handle()
            .put_many("ks", (base..base + 20).map(|k| (k, "v")), Consistency::None)
            .await
            .unwrap();
        node.handle()
            .del("ks", base, Consistency::None)
            .await
            .unwrap();
    }
    wait_converged("three nodes converge after None writes", &nodes, "ks").await;
    assert_eq!(
        nodes[2]
            .handle()
            .get_many_local("ks", 0..300)
            .await
            .unwrap()
            .len(),
        57
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspaces_are_isolated_on_three_nodes() {
    let nodes = cluster(3).await;
    nodes[0]
        .handle()
        .put("a", 1, "in a", Consistency::All)
        .await
        .unwrap();
    nodes[1]
        .handle()
        .put("b", 1, "in b", Consistency::All)
        .await
        .unwrap();
    nodes[2]
        .handle()
        .del("a", 1, Consistency::All)
        .await
        .unwrap();
    for node in &nodes {
        assert_eq!(node.handle().get_local("a", 1).await.unwrap(), None);
        let b = node
            .handle()
            .get_local("b", 1)
            .await
            .unwrap()
            .expect("b is untouched");
        assert_eq!(&b.data[..], b"in b");
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_converge_to_the_last() {
    let nodes = cluster(3).await;
    for (i, node) in nodes.iter().enumerate() {
        node.handle()
            .put("ks", 7, format!("from {i}"), Consistency::None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    wait_converged("concurrent puts converge", &nodes, "ks").await;
    for node in &nodes {
        let doc = node.handle().get_local("ks", 7).await.unwrap().unwrap();
        assert_eq!(&doc.data[..], b"from 2", "the last write wins");
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_put_and_delete_converge_to_the_later() {
    let nodes = cluster(3).await;
    nodes[0]
        .handle()
        .put("ks", 1, "early", Consistency::None)
        .await
        .unwrap();
    nodes[1]
        .handle()
        .del("ks", 2, Consistency::None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    nodes[2]
        .handle()
        .del("ks", 1, Consistency::None)
        .await
        .unwrap();
    nodes[0]
        .handle()
        .put("ks", 2, "late", Consistency::None)
        .await
        .unwrap();
    wait_converged("put vs delete converge", &nodes, "ks").await;
    for node in &nodes {
        assert_eq!(
            node.handle().get_local("ks", 1).await.unwrap(),
            None,
            "the later delete wins"
        );
        let two = node
            .handle()
            .get_local("ks", 2)
            .await
            .unwrap()
            .expect("the later put wins");
        assert_eq!(&two.data[..], b"late");
    }
    shutdown(nodes).await;
}

stub_store_service!(
    /// Stands in for the store's service on a node and never answers a replication batch.
    Blackhole,
    "replicate",
    futures::future::pending().await
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_makes_all_fail_after_the_deadline() {
    let first = start_node(1, Vec::new(), MemStore::new()).await;
    let second = start_node(2, vec![first.addr()], MemStore::new()).await;
    let silent = start_stand_in(3, vec![first.addr()], Blackhole).await;
    let nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=3).await;

    let started = std::time::Instant::now();
    let result = nodes[0].handle().put("ks", 1, "x", Consistency::All).await;
    match result {
        Err(StoreError::Consistency(ConsistencyError::ConsistencyFailure {
            responses,
            required,
            ..
        })) => {
            assert_eq!((responses, required), (1, 2));
        }
        other => panic!("expected a consistency failure, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the write did not hang"
    );
    // The local write is kept, and the reachable replica has it.
    for node in &nodes {
        assert!(node.handle().get_local("ks", 1).await.unwrap().is_some());
    }
    assert_eq!(nodes[0].store.statistics().consistency_failures, 1);

    // The first batch to the silent replica is still in flight, so later writes queue up for
    // it: the backlog shows them (the reachable replica's queue drains).
    nodes[0]
        .handle()
        .put_many("ks", (10..15).map(|k| (k, "y")), Consistency::None)
        .await
        .unwrap();
    test_helper::wait_for(
        "the reachable replica's queue drains, the silent one's holds 5",
        Duration::from_secs(3),
        || async { nodes[0].store.statistics().replication_backlog == 5 },
    )
    .await;
    silent.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_repairs() {
    let ca = &datacake_node::certs::ClusterCa::generate("secure").unwrap();
    let start = |id: u32, seeds: Vec<String>| {
        start_node_full(
            id,
            seeds,
            MemStore::new(),
            move |b| secured(ca, id, b),
            |ext| ext,
        )
    };
    let first = start(1, Vec::new()).await;
    let seeds = vec![first.addr()];
    let second = start(2, seeds.clone()).await;
    let mut nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=2).await;
    nodes[0]
        .handle()
        .put("ks", 1, "over tls", Consistency::All)
        .await
        .unwrap();
    // A node that joins later gets the document through repair, over TLS too.
    nodes.push(start(3, seeds).await);
    wait_for_membership(&nodes, 1..=3).await;
    let late = nodes[2].handle();
    test_helper::wait_for("node 3 repairs from its peers", CONVERGE, || async {
        late.get_local("ks", 1).await.unwrap().is_some()
    })
    .await;
    assert_eq!(
        &late
            .get("ks", 1, Consistency::All)
            .await
            .unwrap()
            .unwrap()
            .data[..],
        b"over tls"
    );
    shutdown(nodes).await;
}

/// A node that stalled until it was held dead, and whose id was started again elsewhere,
/// refuses writes once it is back and sees its restart: its stamps would carry the restart's
/// node id, and two writes with one stamp would let replicas disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_node_refuses_writes_once_it_is_back() {
    let first = start_node(1, Vec::new(), MemStore::new()).await;
    let seed = first.addr();
    let (zombie, zombie_store) = StallableNode::start_with(
        test_helper::node::builder(3, vec![seed.clone()]),
        Box::new(|node| {
            Box::pin(async move {
                node.add_extension(EventuallyConsistentStoreExtension::new(MemStore::new()))
                    .await
                    .expect("store starts")
            })
        }),
    )
    .await;
    first
        .node
        .wait_for_nodes([1, 3], CONVERGE)
        .await
        .expect("node 3 joins");
    let old = zombie_store.handle();
    old.put("ks", 1, "before", Consistency::None)
        .await
        .expect("a member writes");

    let restart = async {
        let restarted = start_node(3, vec![seed], MemStore::new()).await;
        let at = restarted.node.me().public_addr;
        (restarted, at)
    };
    let (restarted, newer) = zombie
        .replaced_while_stalled(&[first.node.handle()], restart, CONVERGE)
        .await;
    match old.put("ks", 2, "after", Consistency::None).await {
        Err(StoreError::Superseded {
            node_id: 3,
            newer: at,
        }) => assert_eq!(at, newer),
        other => panic!("the replaced process wrote: {other:?}"),
    }
    restarted
        .handle()
        .put("ks", 2, "restart", Consistency::None)
        .await
        .expect("the restart writes");
    drop(zombie_store);
    zombie.stop().await;
    shutdown(vec![restarted, first]).await;
}
