use std::time::Duration;

use datacake_node::{Consistency, DatacakeNode};
use datacake_rpc::{ErrorCode, RpcClient};

use super::*;
use crate::messages::DigestRequest;
use crate::test_utils::MemStore;

use crate::testing::{node, DEADLINE};

async fn start(node: &DatacakeNode) -> EventuallyConsistentStore<MemStore> {
    node.add_extension(
        EventuallyConsistentStoreExtension::new(MemStore::new())
            .with_repair_interval(Duration::from_millis(100))
            .with_write_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("store starts")
}

/// A digest request from `from` to the store service of `to`.
async fn ping(from: &DatacakeNode, to: &DatacakeNode) -> Result<(), datacake_rpc::Status> {
    let channel = from.handle().network().get_or_connect(to.me().public_addr);
    let mut client = RpcClient::<StoreService<MemStore>>::new(channel);
    client.set_timeout(Duration::from_secs(5));
    client.send(&digest_request(from)).await.map(|_| ())
}

/// An empty digest request with `from`'s clock.
fn digest_request(from: &DatacakeNode) -> DigestRequest {
    DigestRequest {
        clock: from.clock().get_time(),
        after: None,
        until: None,
        totals: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_removes_its_service_and_ends_its_tasks() {
    let a = node(1, Vec::new()).await;
    let b = node(2, vec![a.me().public_addr.to_string()]).await;
    for n in [&a, &b] {
        n.wait_for_nodes([1, 2], DEADLINE).await.unwrap();
    }
    let baseline = b.handle().running_tasks();
    let store_a = start(&a).await;
    let store_b = start(&b).await;

    store_a
        .handle()
        .put("ks", 1, "v", Consistency::All)
        .await
        .unwrap();
    // b acknowledged it (whether the batch or b's own repair round brought it there first).
    assert!(store_b.handle().get_local("ks", 1).await.unwrap().is_some());
    assert!(
        b.handle().running_tasks() > baseline,
        "the store runs tasks on b"
    );
    ping(&a, &b).await.expect("b serves the store");

    drop(store_b);
    let status = ping(&a, &b).await.expect_err("b's service is gone");
    assert_eq!(status.code(), ErrorCode::Unavailable, "{status:?}");
    test_helper::wait_for("b's store tasks end", DEADLINE, || async {
        b.handle().running_tasks() <= baseline
    })
    .await;
    // A keeps writing; with no one serving on b, b refuses the batch and an `All` write
    // fails at once, naming b.
    let write = store_a.handle().put("ks", 2, "v", Consistency::All).await;
    assert!(
        matches!(write, Err(StoreError::ReplicaFailed { node_id: 2, .. })),
        "{write:?}"
    );

    drop(store_a);
    b.shutdown().await;
    a.shutdown().await;
}

/// A client of node 1's store service that is not a member.
fn rogue(to: &DatacakeNode) -> RpcClient<StoreService<MemStore>> {
    let network = datacake_node::RpcNetwork::new();
    let mut client = RpcClient::new(network.get_or_connect(to.me().public_addr));
    client.set_timeout(Duration::from_secs(5));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_sync_claim_does_not_let_a_node_purge() {
    // Nodes 1 and 2 run the store; node 3 is a live member without it, so it never holds
    // node 1's tombstones.
    let a = node(1, Vec::new()).await;
    let seeds = vec![a.me().public_addr.to_string()];
    let b = node(2, seeds.clone()).await;
    let c = node(3, seeds).await;
    for n in [&a, &b, &c] {
        n.wait_for_nodes([1, 2, 3], DEADLINE).await.unwrap();
    }
    let quick = || {
        EventuallyConsistentStoreExtension::new(MemStore::new())
            .with_repair_interval(Duration::from_millis(20))
            .with_tombstone_grace(Duration::from_millis(10))
    };
    let store_a = a.add_extension(quick()).await.unwrap();
    let _store_b = b.add_extension(quick()).await.unwrap();
    let h = store_a.handle();
    h.put("ks", 1, "v", Consistency::None).await.unwrap();
    h.del("ks", 1, Consistency::None).await.unwrap();
    h.put("ks", 2, "newer", Consistency::None).await.unwrap();

    // Someone who can reach node 1 sends it every request the protocol has, over and over
    // while node 1 runs enough repair rounds to attempt several purges. (Before the purge
    // rule changed, a digest request carried the caller's node id and sync point, and this
    // test sent one in node 3's name: node 1 then purged. Now nothing a caller sends can
    // confirm anything: node 1 learns what node 3 holds only by pulling from node 3.)
    let client = rogue(&a);
    let start = store_a.statistics().repairs_run;
    test_helper::wait_for("node 1 runs 40 repair rounds", DEADLINE, || async {
        let _ = client.send(&digest_request(&a)).await;
        let removal = crate::messages::RemoveMember {
            clock: a.clock().get_time(),
            node_id: 3,
        };
        let _ = client.send(&removal).await;
        store_a.statistics().repairs_run >= start + 40
    })
    .await;
    let tombstones = h.iter_metadata("ks").into_iter().filter(|m| m.2).count();
    assert_eq!(tombstones, 1, "node 3 never confirmed the delete: no purge");

    drop((store_a, _store_b));
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_stamped_far_in_the_future_is_rejected() {
    let a = node(1, Vec::new()).await;
    let store = start(&a).await;
    let client = rogue(&a);
    let now = a.clock().get_time();
    let future = datacake_crdt::HLCTimestamp::new(now.millis() + 3_600_000, 0, 99);
    let batch = crate::messages::ReplicateBatch {
        clock: now,
        keyspaces: vec![crate::messages::KeyspaceBatch {
            keyspace: "ks".into(),
            mutations: vec![crate::messages::WireMutation {
                key: 7,
                timestamp: future,
                data: Some(bytes::Bytes::from_static(b"from the future")),
            }],
        }],
    };
    let reply = client.send(&batch).await.expect("the batch is answered");
    let refused = reply.into_inner().deserialize_view().unwrap().refused;
    assert_eq!(
        refused.len(),
        1,
        "the mutation is refused, and the sender told"
    );
    assert_eq!(refused[0].reason, crate::messages::Refusal::ClockSkew);
    assert_eq!(store.statistics().clock_skew_rejected, 1);
    let h = store.handle();
    h.put("ks", 7, "now", Consistency::None).await.unwrap();
    let doc = h.get_local("ks", 7).await.unwrap().expect("written");
    assert_eq!(&doc.data[..], b"now", "a stamp an hour ahead must not win");
    drop(store);
    a.shutdown().await;
}

/// The store's metrics are recorded through the facade by the same helpers as its
/// statistics: latency by level, the counters, the backlog gauge.
#[test]
fn operations_are_recorded_through_the_metrics_facade() {
    let (skewed, m) = test_helper::metrics::capture_async(async {
        let a = node(1, Vec::new()).await;
        let b = node(2, vec![a.me().public_addr.to_string()]).await;
        for n in [&a, &b] {
            n.wait_for_nodes([1, 2], DEADLINE).await.unwrap();
        }
        let store_a = start(&a).await;
        let store_b = start(&b).await;
        let h = store_a.handle();
        h.put("ks", 1, "v", Consistency::All).await.unwrap();
        assert!(h.get("ks", 1, Consistency::One).await.unwrap().is_some());
        assert!(h.get_local("ks", 1).await.unwrap().is_some());
        // A timestamp an hour ahead is refused (and counted once).
        let now = a.clock().get_time();
        let batch = crate::messages::ReplicateBatch {
            clock: now,
            keyspaces: vec![crate::messages::KeyspaceBatch {
                keyspace: "ks".into(),
                mutations: vec![crate::messages::WireMutation {
                    key: 7,
                    timestamp: datacake_crdt::HLCTimestamp::new(now.millis() + 3_600_000, 0, 99),
                    data: Some(bytes::Bytes::from_static(b"from the future")),
                }],
            }],
        };
        rogue(&a).send(&batch).await.expect("the batch is answered");
        test_helper::wait_for("a repair round on a", DEADLINE, || async {
            store_a.statistics().repairs_run >= 1
        })
        .await;
        let skewed = store_a.statistics().clock_skew_rejected;
        drop((store_a, store_b));
        a.shutdown().await;
        b.shutdown().await;
        skewed
    });
    let (writes, reads) = (
        "datacake_store_write_duration_seconds",
        "datacake_store_read_duration_seconds",
    );
    assert_eq!(
        m.histogram(writes, &[("level", "all")]).len(),
        1,
        "{:?}",
        m.names()
    );
    assert_eq!(m.histogram(reads, &[("level", "one")]).len(), 1);
    assert_eq!(m.histogram(reads, &[("level", "none")]).len(), 1);
    assert_eq!(m.counter("datacake_store_writes_total", &[]), 1);
    assert_eq!(m.counter("datacake_store_replicated_total", &[]), 1);
    assert!(
        !m.histogram("datacake_store_replication_lag_seconds", &[])
            .is_empty(),
        "the All write's batch was acknowledged"
    );
    assert_eq!(skewed, 1);
    assert_eq!(
        m.counter("datacake_store_clock_skew_rejections_total", &[]),
        skewed
    );
    assert!(m.counter("datacake_store_repair_rounds_total", &[]) >= 1);
    // Queued for b, sent, and gone from the backlog.
    assert_eq!(
        m.gauge("datacake_store_replication_backlog", &[]),
        Some(0.0)
    );
}
