//! Joining, leaving, crashing, convergence, foreign clusters and duplicate ids.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datacake_node::{
    ClusterStatistics, ConnectionConfig, DCAwareSelector, DatacakeHandle, DatacakeNode,
    DatacakeNodeBuilder, MembershipChange, NodeError, NodeId,
};
use futures::future::join_all;

use test_helper::node::StallableNode;

use crate::fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_one_by_one() {
    let n1 = start(1, &[]).await;
    assert_eq!(ids(&n1), vec![1]);
    let mut changes = n1.membership_changes();

    let n2 = start(2, &[&n1]).await;
    wait_for_view(&[&n1, &n2], &[1, 2]).await;
    let change = next_change_where(&mut changes, CONVERGE, "node 2 joined", |c| {
        c.joined.iter().any(|m| m.node_id == 2)
    })
    .await;
    assert!(change.left.is_empty(), "nobody left: {change:?}");

    // Node 3 binds every interface and advertises loopback: peers reach it there.
    let config = ConnectionConfig::new(
        "0.0.0.0:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        [seed(&n1)],
    );
    let n3 = DatacakeNodeBuilder::new(3, config)
        .with_gossip_interval(GOSSIP)
        .with_phi_threshold(50.0)
        .with_min_failure_timeout(MIN_FAILURE_TIMEOUT)
        .connect()
        .await
        .unwrap();
    assert!(!n3.me().public_addr.ip().is_unspecified());
    wait_for_view(&[&n1, &n2, &n3], &[1, 2, 3]).await;

    let expected = ClusterStatistics {
        live_members: 3,
        dead_members: 0,
        left_members: 0,
        data_centers: 1,
    };
    for node in [&n1, &n2, &n3] {
        assert_eq!(node.statistics(), expected);
        let n3_seen = node
            .live_members()
            .into_iter()
            .find(|m| m.node_id == 3)
            .unwrap();
        assert_eq!(n3_seen.public_addr, n3.me().public_addr);
    }
    for node in [n3, n2, n1] {
        node.shutdown().await;
    }
}

/// A node expects peers when given a seed other than itself: without seeds, or with only
/// its own address as a seed, it is a cluster of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_expects_peers_only_when_given_another_seed() {
    let n1 = start(1, &[]).await;
    assert!(!n1.expects_peers());
    let n2 = start(2, &[&n1]).await;
    assert!(n2.expects_peers());
    // A fixed port, so the node can be given its own address as its only seed.
    let addr = SocketAddr::from(([127, 0, 0, 1], test_helper::free_ports(1)[0]));
    let own = DatacakeNodeBuilder::new(3, ConnectionConfig::new(addr, addr, [addr.to_string()]))
        .with_gossip_interval(GOSSIP)
        .connect()
        .await
        .expect("node 3 starts");
    assert!(!own.expects_peers());
    for node in [n1, n2, own] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_before_any_failure_detector_could_fire() {
    // No node can be held dead before its heartbeat stood still for MIN_FAILURE_TIMEOUT (2 s),
    // and the phi threshold is very patient too: the leave must be seen far earlier.
    let patient = |id, seeds: &[&DatacakeNode]| builder(id, seeds).with_phi_threshold(PATIENT_PHI);
    let n1 = patient(1, &[]).connect().await.unwrap();
    let n2 = patient(2, &[&n1]).connect().await.unwrap();
    let n3 = patient(3, &[&n1]).connect().await.unwrap();
    wait_for_view(&[&n1, &n2, &n3], &[1, 2, 3]).await;

    let mut changes_1 = n1.membership_changes();
    let mut changes_2 = n2.membership_changes();
    let deadline = MIN_FAILURE_TIMEOUT / 2;
    let started = Instant::now();
    let is_leave_of_3 = |c: &MembershipChange| c.left.iter().any(|m| m.node_id == 3);
    let (_, c1, c2) = tokio::join!(
        n3.shutdown(),
        next_change_where(
            &mut changes_1,
            deadline,
            "node 1 sees node 3 leave",
            is_leave_of_3
        ),
        next_change_where(
            &mut changes_2,
            deadline,
            "node 2 sees node 3 leave",
            is_leave_of_3
        ),
    );
    println!("leave seen by both within {:?}", started.elapsed());
    assert!(c1.joined.is_empty() && c2.joined.is_empty());
    for node in [&n1, &n2] {
        assert_eq!(ids(node), vec![1, 2]);
        let stats = node.statistics();
        assert_eq!(
            (stats.live_members, stats.left_members, stats.dead_members),
            (2, 1, 0)
        );
    }
    n2.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_node_is_marked_dead() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;
    let n3 = start(3, &[&n1]).await;
    wait_for_view(&[&n1, &n2, &n3], &[1, 2, 3]).await;
    let mut changes = n1.membership_changes();

    // Dropping without `shutdown` stops the node abruptly: no leave is announced.
    drop(n3);

    next_change_where(&mut changes, CONVERGE, "node 1 sees node 3 gone", |c| {
        c.left.iter().any(|m| m.node_id == 3)
    })
    .await;
    for node in [&n1, &n2] {
        test_helper::wait_for("node 3 held dead", CONVERGE, || async {
            let s = node.statistics();
            (s.live_members, s.dead_members, s.left_members) == (2, 1, 0)
        })
        .await;
    }
    n2.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_converge() {
    // Twenty debug-build nodes on a small, shared machine saturate it: gossip every 100 ms
    // and a patient failure detector keep stalls from looking like deaths (detecting deaths
    // is the crash test's business).
    let patient = |id, seeds: &[&DatacakeNode]| {
        builder(id, seeds)
            .with_gossip_interval(Duration::from_millis(100))
            .with_phi_threshold(PATIENT_PHI)
            .with_min_failure_timeout(Duration::from_secs(5))
    };
    let n1 = patient(1, &[]).connect().await.unwrap();
    let seed_node = &n1;
    let others = join_all(
        (2..=20).map(|id| async move { patient(id, &[seed_node]).connect().await.unwrap() }),
    )
    .await;
    let mut all = vec![n1];
    all.extend(others);
    let expected: Vec<u32> = (1..=20).collect();
    let refs: Vec<&DatacakeNode> = all.iter().collect();
    wait_until_all_see(&refs, &expected).await;
    for node in &all {
        assert_eq!(node.statistics().dead_members, 0);
    }
    join_all(all.into_iter().map(|n| n.shutdown())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_cluster_is_kept_out() {
    let n1 = builder(1, &[])
        .with_cluster_id("blue")
        .connect()
        .await
        .unwrap();
    // The foreign node gossips with node 1 every round while `connect` waits for an answer
    // that never comes (node 1 refuses it), then starts alone.
    let foreign = builder(2, &[&n1])
        .with_cluster_id("red")
        .with_join_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    // A node of the right cluster, seeded the same way, does join: gossip works.
    let n3 = builder(3, &[&n1])
        .with_cluster_id("blue")
        .connect()
        .await
        .unwrap();
    wait_for_view(&[&n1, &n3], &[1, 3]).await;
    assert_eq!(ids(&foreign), vec![2]);
    assert_eq!(n1.statistics().live_members, 2);
    for node in [n3, foreign, n1] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_node_id_is_refused() {
    let n1 = start(1, &[]).await;
    let n2 = start(2, &[&n1]).await;
    wait_for_view(&[&n1, &n2], &[1, 2]).await;

    let result = builder(2, &[&n1]).connect().await;
    match result {
        Err(NodeError::DuplicateNodeId {
            node_id,
            existing_addr,
        }) => {
            assert_eq!(node_id, 2);
            assert_eq!(existing_addr, n2.me().public_addr);
        }
        other => panic!("expected DuplicateNodeId, got {other:?}"),
    }
    // The original node 2 is still the member, at its own address.
    for node in [&n1, &n2] {
        assert_eq!(ids(node), vec![1, 2]);
        let two = node
            .live_members()
            .into_iter()
            .find(|m| m.node_id == 2)
            .unwrap();
        assert_eq!(two.public_addr, n2.me().public_addr);
    }
    n2.shutdown().await;
    n1.shutdown().await;
}

/// A node restarted at its own address right after a crash joins at once: the listener it
/// bound there proves the old process gone from that address. Before, peers were still
/// relaying the crashed process's last heartbeats, the join check took the rise for a live
/// duplicate, and about every other restart failed with `DuplicateNodeId`; hence several
/// crashes in a row. Default timings: the test fixtures' shorter gossip interval settles the
/// relays before the restart has bound the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_its_address_right_after_a_crash_rejoins() {
    let with_defaults =
        |id, addr, seeds| DatacakeNodeBuilder::new(id, ConnectionConfig::new(addr, addr, seeds));
    let n1 = with_defaults(1, local(), vec![]).connect().await.unwrap();
    let n2 = with_defaults(2, local(), vec![seed(&n1)])
        .connect()
        .await
        .unwrap();
    let mut n3 = with_defaults(3, local(), vec![seed(&n1)])
        .connect()
        .await
        .unwrap();
    let addr = n3.me().public_addr;
    for crash in 1..=5 {
        wait_for_view(&[&n1, &n2, &n3], &[1, 2, 3]).await;
        let crashed_generation = n3.handle().generation();
        drop(n3);
        test_helper::wait_for("the crashed node's port to be free", CONVERGE, || async {
            std::net::TcpListener::bind(addr).is_ok()
        })
        .await;
        n3 = match with_defaults(3, addr, vec![seed(&n1)]).connect().await {
            Ok(node) => node,
            Err(error) => panic!("restart after crash {crash}: {error}"),
        };
        assert!(n3.handle().generation() > crashed_generation);
    }
    wait_for_view(&[&n1, &n2, &n3], &[1, 2, 3]).await;
    for node in [n3, n2, n1] {
        node.shutdown().await;
    }
}

/// Where `node` lists node 3.
fn node_3_at(node: &DatacakeHandle) -> Option<SocketAddr> {
    node.live_members()
        .iter()
        .find(|m| m.node_id == 3)
        .map(|m| m.public_addr)
}

/// Node 3 stalls (a long pause, a frozen VM) until the cluster holds it dead, is started again
/// elsewhere, and then comes back: the cluster keeps the restart, and the stalled process
/// sees that it was replaced. (The older generation used to win: the zombie took its id back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_stall_does_not_take_its_id_back_from_its_restart() {
    stalled_node_returns_after_its_restart(builder).await;
}

/// The scenario of the test above, with nodes made by `make` (seeded from its second
/// argument).
pub(crate) async fn stalled_node_returns_after_its_restart(
    make: impl Fn(NodeId, &[&DatacakeNode]) -> DatacakeNodeBuilder<DCAwareSelector>,
) {
    let start = |id, seeds: &[&DatacakeNode]| make(id, seeds).connect();
    let n1 = start(1, &[]).await.expect("node 1 starts");
    let n2 = start(2, &[&n1]).await.expect("node 2 starts");
    let zombie = StallableNode::start(make(3, &[&n1])).await;
    wait_for_view(&[&n1, &n2], &[1, 2, 3]).await;

    let resume = zombie.stall();
    wait_for_view(&[&n1, &n2], &[1, 2]).await;
    let restarted = start(3, &[&n1]).await.expect("node 3 starts again");
    let new_addr = restarted.me().public_addr;
    assert_ne!(new_addr, zombie.handle().me().public_addr);
    // A barrier: node 4, seeded from the restart only, joins after the restart finished
    // joining. Whoever tells a node of node 4 also tells it of the restart's state from
    // then (chitchat sends everything newer in one delta), so once nodes 1 and 2 list node 4
    // they know the restart as a full member, not as a node still checking its id (which
    // never displaces a member: the returning zombie would be kept for a round).
    let n4 = start(4, &[&restarted]).await.expect("node 4 starts");
    wait_for_view(&[&n1, &n2], &[1, 2, 3, 4]).await;
    let (h1, h2, h3) = (n1.handle(), n2.handle(), restarted.handle());
    assert_eq!(node_3_at(&h1), Some(new_addr));
    assert_eq!(node_3_at(&h2), Some(new_addr));

    drop(resume);
    test_helper::wait_for("the stalled node to list its restart", CONVERGE, || async {
        node_3_at(zombie.handle()) == Some(new_addr)
    })
    .await;
    assert_eq!(
        zombie.handle().superseded_by(),
        Some(new_addr),
        "the stalled process knows it was replaced"
    );
    // The zombie gossips again, so every node holds it live for at least the minimum failure
    // timeout: throughout, they all keep listing the restart.
    let until = Instant::now() + MIN_FAILURE_TIMEOUT;
    while Instant::now() < until {
        for node in [&h1, &h2, &h3] {
            assert_eq!(
                node_3_at(node),
                Some(new_addr),
                "node {} lists node 3 at the stalled incarnation's address",
                node.me().node_id
            );
            assert_eq!(node.superseded_by(), None);
        }
        tokio::time::sleep(test_helper::POLL_INTERVAL).await;
    }
    zombie.stop().await;
    for node in [n4, restarted, n2, n1] {
        node.shutdown().await;
    }
}
