use std::time::Duration;

use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
use datacake_eventual_consistency::{
    Consistency, Document, EventuallyConsistentStoreExtension, Storage, StoreError,
    PURGE_WATERMARK_KEYSPACE,
};

use crate::fixtures::{
    shutdown, start_node_full, start_node_with, wait_converged, wait_for_membership,
    wait_until_gone, TestNode, CONVERGE,
};

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
            .get_many_local("ks", 0..50)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            node.handle()
                .get_many_local("ks", 0..2_000)
                .await
                .unwrap()
                .len(),
            51
        );
    }
    nodes.reverse();
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_delete_never_resurrects_across_a_restart() {
    let quick = |ext: EventuallyConsistentStoreExtension<MemStore>| {
        ext.with_tombstone_grace(Duration::from_millis(50))
    };
    let storage = MemStore::new();
    let node = start_node_with(1, Vec::new(), storage.clone(), quick).await;
    let h = node.handle();
    h.put("ks", 7, "v", Consistency::All).await.unwrap();
    h.del("ks", 7, Consistency::All).await.unwrap();
    let (_, deleted_at, tombstone) = node.metadata("ks")[0];
    assert!(tombstone);

    test_helper::wait_for(
        "the tombstone is purged and the watermark persisted",
        CONVERGE,
        || async {
            let tombstones = storage.iter_metadata("ks").await.unwrap();
            let marks = storage
                .iter_metadata(PURGE_WATERMARK_KEYSPACE)
                .await
                .unwrap_or_default();
            tombstones.is_empty() && !marks.is_empty()
        },
    )
    .await;
    assert!(!h
        .get_keyspace_list()
        .iter()
        .any(|k| k == PURGE_WATERMARK_KEYSPACE));
    assert!(matches!(
        h.put(PURGE_WATERMARK_KEYSPACE, 1, "x", Consistency::None)
            .await,
        Err(StoreError::ReservedKeyspace { .. })
    ));
    assert!(matches!(
        h.get_local(PURGE_WATERMARK_KEYSPACE, 1).await,
        Err(StoreError::ReservedKeyspace { .. })
    ));
    shutdown(vec![node]).await;

    // Restart on the same storage; a peer holds a write of 7 older than the purged delete
    // (but newer than the original put) and repair offers it.
    let node = start_node_with(1, Vec::new(), storage.clone(), quick).await;
    assert!(node.metadata("ks").is_empty());
    let stale_storage = MemStore::new();
    let stale_at = HLCTimestamp::new(deleted_at.millis() - 1, 0, 2);
    stale_storage
        .put("ks", Document::new(7, stale_at, "stale"))
        .await
        .unwrap();
    let peer = start_node_with(2, vec![node.addr()], stale_storage, quick).await;
    let nodes = vec![node, peer];
    wait_for_membership(&nodes, 1..=2).await;
    test_helper::wait_for(
        "the restarted node repairs from the peer",
        CONVERGE,
        || async { nodes[0].store.statistics().repairs_run >= 1 },
    )
    .await;

    let h = nodes[0].handle();
    assert_eq!(
        h.get_local("ks", 7).await.unwrap(),
        None,
        "the purged delete holds"
    );
    assert!(nodes[0].metadata("ks").is_empty());
    assert_eq!(storage.get("ks", 7).await.unwrap(), None);
    assert!(!h
        .get_keyspace_list()
        .iter()
        .any(|k| k == PURGE_WATERMARK_KEYSPACE));
    shutdown(nodes).await;
}

/// The tombstone grace of the down-past-the-grace tests: shorter than node 3's outage.
fn short_grace<S: Storage>(
    ext: EventuallyConsistentStoreExtension<S>,
) -> EventuallyConsistentStoreExtension<S> {
    ext.with_tombstone_grace(Duration::from_millis(300))
}

fn fast_detector(b: datacake_node::DatacakeNodeBuilder) -> datacake_node::DatacakeNodeBuilder {
    b.with_min_failure_timeout(Duration::from_millis(500))
}

/// Three nodes over `storage()`, ids 0..10 written to all; node 3 crashes, then node 1
/// deletes 0..5, and nodes 1 and 2 purge the tombstones while node 3 is down past the grace. Returns the two nodes, node 3's storage (still holding 0..5) and
/// the seeds.
async fn deletes_purged_while_node_3_is_down<S: Storage + Clone>(
    storage: impl Fn() -> S,
) -> (Vec<TestNode<S>>, S, Vec<String>) {
    let first = start_node_full(1, Vec::new(), storage(), fast_detector, short_grace).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start_node_full(id, seeds.clone(), storage(), fast_detector, short_grace).await);
    }
    wait_for_membership(&nodes, 1..=3).await;
    nodes[0]
        .handle()
        .put_many("ks", (0..10).map(|i| (i, "v")), Consistency::All)
        .await
        .unwrap();

    let down = nodes.pop().expect("three nodes").crash();
    wait_until_gone(&nodes, 3).await;
    nodes[0]
        .handle()
        .del_many("ks", 0..5, Consistency::None)
        .await
        .unwrap();
    test_helper::wait_for("nodes 1 and 2 purge the tombstones", CONVERGE, || async {
        let mut purged = true;
        for node in &nodes {
            let stored = node.storage.iter_metadata("ks").await.unwrap();
            purged &= stored.len() == 5 && !stored.iter().any(|m| m.2);
        }
        purged
    })
    .await;
    (nodes, down, seeds)
}

/// [`deletes_purged_while_node_3_is_down`] on storage that can fail, then node 3 back on
/// its old storage with the disk refusing writes, once every node sees the three and node 3
/// has failed to record a peer's purge watermark: it still holds its obsolete copies. Returns
/// the three nodes and node 3's storage (still refusing writes).
async fn node_3_back_on_a_refusing_disk() -> (
    Vec<TestNode<FaultyStorage<MemStore>>>,
    FaultyStorage<MemStore>,
) {
    let (mut nodes, down, seeds) =
        deletes_purged_while_node_3_is_down(|| FaultyStorage::new(MemStore::new())).await;
    down.fail_writes(true);
    nodes.push(start_node_full(3, seeds, down.clone(), fast_detector, short_grace).await);
    wait_for_membership(&nodes, 1..=3).await;
    test_helper::wait_for(
        "node 3 fails to record a peer's purge watermark",
        CONVERGE,
        || async { down.refused(PURGE_WATERMARK_KEYSPACE) > 0 },
    )
    .await;
    (nodes, down)
}

/// A node down for longer than the tombstone grace misses a delete and its purge; when it
/// returns on its old storage, neither it nor a node that joins afterwards serves the deleted
/// documents again, and the cluster converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_past_the_grace_does_not_resurrect_deletes_on_return() {
    let (mut nodes, down, seeds) = deletes_purged_while_node_3_is_down(MemStore::new).await;
    // A write node 3 misses too.
    nodes[1]
        .handle()
        .put("ks", 100, "newer", Consistency::None)
        .await
        .unwrap();

    // Node 3 returns on its old storage (it still holds 0..5), then a new node joins.
    nodes.push(start_node_full(3, seeds.clone(), down, fast_detector, short_grace).await);
    nodes.push(
        start_node_full(
            4,
            seeds.clone(),
            MemStore::new(),
            fast_detector,
            short_grace,
        )
        .await,
    );
    wait_for_membership(&nodes, 1..=4).await;
    wait_converged("all four converge without the deleted ids", &nodes, "ks").await;
    for node in &nodes {
        for id in 0..5 {
            assert_eq!(
                node.storage.get_doc("ks", id),
                None,
                "id {id} stays deleted"
            );
        }
        assert!(node.storage.get_doc("ks", 100).is_some());
    }
    shutdown(nodes).await;
}

/// As above, but the returning node's disk refuses writes when it first meets a peer's
/// purge watermark: it must not drop the obsolete copies from its memory while its storage
/// keeps them (they would be served by every read, and no repair would ever look at them
/// again). Once its disk works, they are gone from its storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obsolete_copies_a_failing_disk_kept_are_dropped_once_it_works() {
    let (nodes, down) = node_3_back_on_a_refusing_disk().await;
    down.fail_writes(false);
    test_helper::wait_for("node 3 drops its obsolete copies", CONVERGE, || async {
        (0..5).all(|id| down.inner().get_doc("ks", id).is_none())
    })
    .await;
    wait_converged("all three converge without the deleted ids", &nodes, "ks").await;
    for id in 0..5 {
        assert_eq!(
            nodes[2]
                .handle()
                .get("ks", id, Consistency::None)
                .await
                .unwrap(),
            None,
            "id {id} stays deleted on node 3"
        );
    }
    shutdown(nodes).await;
}

/// While the returning node still holds the obsolete copies (its disk refuses the peer's
/// purge watermark, so it cannot drop them yet), a read at a level on a node that purged the
/// deletes asks it and gets them back: the reader knows them purged (it holds nothing for
/// those ids, stamped at or below its own watermark) and must not serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_does_not_serve_copies_it_knows_purged() {
    let (nodes, down) = node_3_back_on_a_refusing_disk().await;
    assert!(
        down.inner().get_doc("ks", 0).is_some(),
        "node 3 still holds its obsolete copy"
    );
    for id in 0..5 {
        for level in [Consistency::All, Consistency::Quorum] {
            assert_eq!(
                nodes[0].handle().get("ks", id, level).await.unwrap(),
                None,
                "id {id} stays deleted for a {level:?} read on node 1"
            );
        }
    }
    down.fail_writes(false);
    shutdown(nodes).await;
}

/// A node that joins with its clock far behind the cluster's stamps its writes below the
/// peers' purge watermark, so the peers cannot store them. They must say so: before, they
/// dropped such a write and acknowledged it, a Quorum write returned `Ok` with no peer
/// holding it, and the writer forgot its own copy at its next repair round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_peers_purge_watermark_refuses_is_not_acknowledged() {
    let first = start_node_full(1, Vec::new(), MemStore::new(), fast_detector, short_grace).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    nodes.push(
        start_node_full(
            2,
            seeds.clone(),
            MemStore::new(),
            fast_detector,
            short_grace,
        )
        .await,
    );
    wait_for_membership(&nodes, 1..=2).await;
    let h = nodes[0].handle();
    h.put("ks", 0, "v", Consistency::All).await.unwrap();
    h.del("ks", 0, Consistency::All).await.unwrap();
    test_helper::wait_for("nodes 1 and 2 purge the tombstone", CONVERGE, || async {
        let mut purged = true;
        for node in &nodes {
            purged &= node.storage.iter_metadata("ks").await.unwrap().is_empty();
        }
        purged
    })
    .await;
    // 30 s behind: past the drift bound, so the peers' clocks never pull it forward.
    let lagging =
        |b: datacake_node::DatacakeNodeBuilder| fast_detector(b).with_clock_offset(-30_000);
    nodes.push(start_node_full(3, seeds, MemStore::new(), lagging, short_grace).await);
    wait_for_membership(&nodes, 1..=3).await;
    let written = nodes[2]
        .handle()
        .put("ks", 500, "late", Consistency::Quorum)
        .await;
    let held: Vec<bool> = nodes[..2]
        .iter()
        .map(|n| n.storage.get_doc("ks", 500).is_some())
        .collect();
    match written {
        Ok(()) => assert!(
            held.iter().any(|h| *h),
            "a Quorum write was acknowledged and no peer holds it"
        ),
        // Refused by the peers it asked (the level's error names them).
        Err(error) => assert!(error.to_string().contains("failed"), "{error}"),
    }
    assert_eq!(
        held,
        [false, false],
        "the peers' watermark refuses the write"
    );
    shutdown(nodes).await;
}

/// With the default grace (24 hours) a down member holds every purge back; removing it lets
/// the others purge, and the removal reaches the live peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_down_member_lets_the_others_purge() {
    let quick_repair = |ext: EventuallyConsistentStoreExtension<MemStore>| {
        ext.with_repair_interval(Duration::from_millis(20))
    };
    let fast_detector = |b: datacake_node::DatacakeNodeBuilder| {
        b.with_min_failure_timeout(Duration::from_millis(500))
    };
    let first = start_node_full(1, Vec::new(), MemStore::new(), fast_detector, quick_repair).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(
            start_node_full(
                id,
                seeds.clone(),
                MemStore::new(),
                fast_detector,
                quick_repair,
            )
            .await,
        );
    }
    wait_for_membership(&nodes, 1..=3).await;
    let h = nodes[0].handle();
    h.put_many("ks", (0..10).map(|i| (i, "v")), Consistency::All)
        .await
        .unwrap();
    let _down = nodes.pop().expect("three nodes").crash();
    wait_until_gone(&nodes, 3).await;
    h.del_many("ks", 0..5, Consistency::Quorum).await.unwrap();
    nodes[1]
        .handle()
        .put("ks", 100, "newer", Consistency::Quorum)
        .await
        .unwrap();

    let tombstones = |node: &crate::fixtures::TestNode| {
        node.handle()
            .iter_metadata("ks")
            .iter()
            .filter(|m| m.2)
            .count()
    };
    let start = nodes[0].store.statistics().repairs_run;
    test_helper::wait_for("node 1 runs 40 repair rounds", CONVERGE, || async {
        nodes[0].store.statistics().repairs_run >= start + 40
    })
    .await;
    assert_eq!(
        tombstones(&nodes[0]),
        5,
        "node 3 never confirmed the deletes"
    );

    assert!(matches!(
        nodes[0].store.remove_member(2).await,
        Err(StoreError::MemberIsLive { node_id: 2 })
    ));
    nodes[0]
        .store
        .remove_member(3)
        .await
        .expect("node 3 is down");
    nodes[0]
        .store
        .remove_member(3)
        .await
        .expect("a repeated removal tells the peers again");
    assert!(matches!(
        nodes[0].store.remove_member(4).await,
        Err(StoreError::UnknownMember { node_id: 4 })
    ));
    test_helper::wait_for("both nodes purge", CONVERGE, || async {
        nodes.iter().all(|n| tombstones(n) == 0)
    })
    .await;
    // Quorum now counts the two members left.
    h.put("ks", 200, "two of two", Consistency::All)
        .await
        .unwrap();
    shutdown(nodes).await;
}
