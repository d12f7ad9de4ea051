//! Messages bounded by bytes: big documents, big bursts and many keyspaces replicate.

use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
use datacake_eventual_consistency::Consistency;
use futures::future::try_join_all;

use std::time::Duration;

use datacake_node::DatacakeNodeBuilder;

use crate::fixtures::{
    shutdown, start_node_full, wait_converged, wait_for_membership, Extension, TestNode, CONVERGE,
};

const MIB: usize = 1 << 20;

/// Big writes take their time in a debug build: what is tested is that they replicate, so
/// the deadlines are generous (a batch RPC that times out counts its peer as failed for the
/// writes in it, which with `All` fails them at once).
fn patient(ext: Extension) -> Extension {
    ext.with_write_timeout(Duration::from_secs(60))
        .with_rpc_timeout(Duration::from_secs(60))
}

/// Hundreds of MiB through a debug build on two cores can hold a node's gossip back for a
/// second: these tests are about message sizes, not failure detection, so the detector is
/// slow.
fn slow_detector(builder: DatacakeNodeBuilder) -> DatacakeNodeBuilder {
    builder.with_min_failure_timeout(Duration::from_secs(30))
}

/// Node `id` with a patient write timeout and a slow failure detector.
async fn start(id: u32, seeds: Vec<String>) -> TestNode {
    start_node_full(id, seeds, MemStore::new(), slow_detector, patient).await
}

/// `n` nodes (ids 1..=n) started with [`start`].
async fn cluster(n: u32) -> Vec<TestNode> {
    let first = start(1, Vec::new()).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start(id, seeds.clone()).await);
    }
    wait_for_membership(&nodes, 1..=n).await;
    nodes
}

/// `n` concurrent puts of distinct 1 MiB documents at `level` through node 1.
async fn burst(nodes: &[TestNode], first_id: u64, n: u64, level: Consistency) {
    let writes = (first_id..first_id + n).map(|id| {
        let h = nodes[0].handle();
        async move {
            let doc = vec![(id % 251) as u8; MIB];
            h.put("big", id, doc, level).await
        }
    });
    try_join_all(writes).await.expect("every write succeeds");
}

async fn every_node_holds(nodes: &[TestNode], ids: std::ops::Range<u64>) {
    let expected = ids.end - ids.start;
    test_helper::wait_for("every node holds every big document", CONVERGE, || async {
        nodes.iter().all(|n| {
            ids.clone()
                .filter(|id| {
                    n.storage
                        .get_doc("big", *id)
                        .is_some_and(|d| d.data.len() == MIB)
                })
                .count() as u64
                == expected
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_64_one_mib_puts_replicate_at_none_and_all() {
    let nodes = cluster(3).await;
    burst(&nodes, 0, 64, Consistency::None).await;
    burst(&nodes, 64, 64, Consistency::All).await;
    every_node_holds(&nodes, 0..128).await;
    wait_converged("big documents converge", &nodes, "big").await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_200_one_mib_puts_replicate_at_none_and_all() {
    let nodes = cluster(3).await;
    burst(&nodes, 0, 200, Consistency::None).await;
    burst(&nodes, 200, 200, Consistency::All).await;
    every_node_holds(&nodes, 0..400).await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_catches_up_on_100_one_mib_documents() {
    let mut nodes = cluster(1).await;
    burst(&nodes, 0, 100, Consistency::None).await;
    let late = start(2, vec![nodes[0].addr()]).await;
    nodes.push(late);
    wait_for_membership(&nodes, 1..=2).await;
    every_node_holds(&nodes, 0..100).await;
    shutdown(nodes).await;
}

/// A node back from an outage during a burst of big writes takes them by repair one reply
/// at a time: what it stores at once (and so holds in memory) is at most one message of
/// documents, not a whole fetch page of them. (Before, every reply for a page of 1,024 ids
/// was held until the page was complete, then written in one call: here all 40 documents,
/// 2.5 MiB with 1 MiB messages.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_stores_repaired_documents_one_message_at_a_time() {
    const MESSAGE: usize = 1 << 20;
    // The payload of one message: its size less the room kept for the envelope (64 KiB).
    const BUDGET: usize = MESSAGE - (64 << 10);
    const DOCUMENT: usize = 64 << 10;
    const DOCUMENTS: u64 = 40;
    fn small<S: datacake_eventual_consistency::Storage>(ext: Extension<S>) -> Extension<S> {
        ext.with_max_message_size(MESSAGE)
    }
    let first = start_node_full(1, Vec::new(), MemStore::new(), |b| b, small).await;
    let storage = FaultyStorage::new(MemStore::new());
    let returning = start_node_full(2, vec![first.addr()], storage.clone(), |b| b, small).await;
    first.node.wait_for_nodes(1..=2, CONVERGE).await.unwrap();
    returning
        .node
        .wait_for_nodes(1..=2, CONVERGE)
        .await
        .unwrap();
    drop(returning.store);
    returning.node.shutdown().await;
    test_helper::wait_for("node 1 sees node 2 gone", CONVERGE, || async {
        first.node.live_members().len() == 1
    })
    .await;

    for id in 0..DOCUMENTS {
        first
            .handle()
            .put("big", id, vec![id as u8; DOCUMENT], Consistency::None)
            .await
            .unwrap();
    }
    let returning = start_node_full(2, vec![first.addr()], storage.clone(), |b| b, small).await;
    test_helper::wait_for("node 2 takes every document", CONVERGE, || async {
        (0..DOCUMENTS).all(|id| storage.inner().get_doc("big", id).is_some())
    })
    .await;
    assert!(
        storage.largest_write() <= BUDGET,
        "node 2 stored {} bytes of documents in one call; a message holds {BUDGET}",
        storage.largest_write()
    );
    drop(returning.store);
    returning.node.shutdown().await;
    drop(first.store);
    first.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_catches_up_on_10_000_keyspaces() {
    const KEYSPACES: usize = 10_000;
    let mut nodes = cluster(1).await;
    let h = nodes[0].handle();
    for i in 0..KEYSPACES {
        h.put(
            &format!("tenant-{i:05}"),
            1,
            format!("doc of {i}"),
            Consistency::None,
        )
        .await
        .unwrap();
    }
    let late = start(2, vec![nodes[0].addr()]).await;
    nodes.push(late);
    wait_for_membership(&nodes, 1..=2).await;
    // Ten thousand keyspaces cost ten thousand pairs of round trips in a debug build: a
    // longer deadline than the other tests', and a cheap check first.
    test_helper::wait_for(
        "the late node holds every keyspace",
        3 * CONVERGE,
        || async {
            nodes[1].handle().get_keyspace_list().len() == KEYSPACES
                && (0..KEYSPACES).all(|i| {
                    nodes[1]
                        .storage
                        .get_doc(&format!("tenant-{i:05}"), 1)
                        .is_some()
                })
        },
    )
    .await;
    let late = nodes[1].handle();
    for i in (0..KEYSPACES).step_by(997) {
        let name = format!("tenant-{i:05}");
        assert_eq!(
            late.metadata_digest(&name),
            nodes[0].handle().metadata_digest(&name)
        );
    }
    shutdown(nodes).await;
}

/// With 1 MiB messages, 4,000 keyspaces of 250-byte names do not fit one digest reply: the
/// nodes still exchange every keyspace. (Convergence alone would also come from later rounds
/// covering what an earlier one left out; the unit test
/// `anti_entropy::tests::one_round_covers_every_keyspace_across_pages` checks that one round
/// covers them all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_exchanges_are_paged_in_both_directions() {
    const KEYSPACES: usize = 4_000;
    let small = |ext: Extension| ext.with_max_message_size(1 << 20);
    let name = |i: usize| format!("{}{i:05}", "k".repeat(245));
    let first = start_node_full(1, Vec::new(), MemStore::new(), slow_detector, small).await;
    let h = first.handle();
    for i in 0..KEYSPACES {
        h.put(&name(i), 1, "v", Consistency::None).await.unwrap();
    }
    // The late node already holds every other keyspace, with another version: both sides
    // then send totals and digests for thousands of long names.
    let late_storage = MemStore::new();
    let mut nodes = vec![first];
    nodes.push(start_node_full(2, vec![nodes[0].addr()], late_storage, slow_detector, small).await);
    for i in (0..KEYSPACES).step_by(2) {
        nodes[1]
            .handle()
            .put(&name(i), 2, "mine", Consistency::None)
            .await
            .unwrap();
    }
    wait_for_membership(&nodes, 1..=2).await;
    test_helper::wait_for("both nodes hold every document", CONVERGE, || async {
        (0..KEYSPACES).all(|i| {
            nodes
                .iter()
                .all(|n| n.storage.get_doc(&name(i), 1).is_some())
                && (i % 2 == 1
                    || nodes
                        .iter()
                        .all(|n| n.storage.get_doc(&name(i), 2).is_some()))
        })
    })
    .await;
    shutdown(nodes).await;
}
