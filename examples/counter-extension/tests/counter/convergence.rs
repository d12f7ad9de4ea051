//! The counters converge: across nodes, at a level, and on a node that joins late.

use counter_extension::messages::{Entry, Merge};
use counter_extension::CounterExtension;
use datacake_node::{Consistency, HLCTimestamp};
use test_helper::wait_for;

use crate::fixtures::{cluster, rogue_client, start, start_plain_node, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_on_different_nodes_converge() {
    let nodes = cluster(3).await;
    let incrs = nodes.iter().enumerate().map(|(i, n)| {
        let by = i as u64 + 1;
        async move { n.counter.incr("hits", by, Consistency::One).await }
    });
    for result in futures::future::join_all(incrs).await {
        result.expect("a level-one increment succeeds");
    }
    for n in &nodes {
        wait_for("every node counts 1 + 2 + 3 hits", DEADLINE, || async {
            n.counter.get("hits") == 6
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_increment_is_visible_on_every_node_when_it_returns() {
    let nodes = cluster(3).await;
    for round in 1..=5u64 {
        let value = nodes[0]
            .counter
            .incr("orders", 2, Consistency::All)
            .await
            .expect("every peer acknowledges");
        assert_eq!(value, 2 * round);
        for n in &nodes {
            // No waiting: the level promised the increment was applied everywhere.
            assert_eq!(n.counter.get("orders"), 2 * round, "on {}", n.node.me());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_late_catches_up() {
    let nodes = cluster(2).await;
    nodes[0]
        .counter
        .incr("visits", 3, Consistency::All)
        .await
        .unwrap();
    nodes[1]
        .counter
        .incr("visits", 4, Consistency::All)
        .await
        .unwrap();
    nodes[1]
        .counter
        .incr("signups", 1, Consistency::All)
        .await
        .unwrap();

    let late = start(3, vec![nodes[0].addr().to_string()]).await;
    wait_for("the newcomer catches up", DEADLINE, || async {
        late.counter.get("visits") == 7 && late.counter.get("signups") == 1
    })
    .await;
    // The state came from the members' catch-up pushes (nothing was incremented since).
    let catch_ups: u64 = nodes.iter().map(|n| n.counter.statistics().catch_ups).sum();
    assert!(catch_ups >= 1, "a member pushed its state to the newcomer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_live_before_its_counter_starts_catches_up() {
    let nodes = cluster(2).await;
    nodes[0]
        .counter
        .incr("visits", 1, Consistency::All)
        .await
        .unwrap();
    // Node 3 joins the cluster without the counter yet...
    let late = start_plain_node(3, vec![nodes[0].addr().to_string()]).await;
    nodes[0]
        .node
        .wait_for_nodes([1, 2, 3], DEADLINE)
        .await
        .unwrap();
    // ...and misses this increment's push (it has no service to take it).
    nodes[0]
        .counter
        .incr("visits", 2, Consistency::None)
        .await
        .unwrap();
    let counter = late.add_extension(CounterExtension::new()).await.unwrap();
    wait_for(
        "the newcomer catches up with both increments",
        DEADLINE,
        || async { counter.get("visits") == 3 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_at_merges_what_the_selected_peers_hold() {
    let nodes = cluster(2).await;
    // A total only node 2 knows (as if node 9 had pushed it there and left).
    let merge = Merge {
        from: 9,
        clock: HLCTimestamp::new(nodes[0].node.clock().get_time().millis(), 0, 9),
        entries: vec![Entry {
            name: "likes".into(),
            node: 9,
            total: 11,
        }],
    };
    rogue_client(nodes[1].addr()).send(&merge).await.unwrap();
    assert_eq!(nodes[0].counter.get("likes"), 0);
    let value = nodes[0]
        .counter
        .get_at("likes", Consistency::All)
        .await
        .expect("the peer answers");
    assert_eq!(value, 11);
    assert_eq!(nodes[0].counter.get("likes"), 11, "the read merged locally");
}
