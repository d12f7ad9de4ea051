//! Election, reads and writes, forwarding and fail-over in a three-node cluster, and a
//! stalled node's Raft stopping once its id was started again.

use std::collections::BTreeMap;
use std::time::Duration;

use datacake_raft::{RaftError, RaftExtension, ReadConsistency, Role};
use test_helper::node::StallableNode;

use crate::fixtures::{
    by_id, config, node_builder, start, start_cluster, wait_for_leader, wait_for_leader_of, Get,
    KvMachine, RaftNode, Set, CONVERGE, ELECTION_MAX,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader() {
    let nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader = wait_for_leader(&all).await;

    for node in &nodes {
        assert_eq!(node.raft.voters(), [1, 2, 3].into());
        assert!(node.raft.learners().is_empty());
        let expected = if node.id() == leader {
            Role::Leader
        } else {
            Role::Follower
        };
        assert_eq!(node.raft.role(), expected, "node {}", node.id());
    }
    // The bootstrap rule: the lowest id initialised, so everyone is in one cluster of three.
    let term = by_id(&nodes, leader).raft.status().term;
    assert!(term >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_the_leader_are_read_linearizably_on_every_node() {
    let nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader = by_id(&nodes, wait_for_leader(&all).await);

    let mut expected = BTreeMap::new();
    for i in 0..20u64 {
        let key = format!("k{i}");
        let previous = leader
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        assert_eq!(previous, None);
        expected.insert(key, i);
    }
    assert_eq!(
        leader
            .raft
            .write(Set("k0".into(), 100))
            .await
            .expect("overwrite commits"),
        Some(0)
    );
    expected.insert("k0".into(), 100);

    // The leader's commit index covers everything it applied, and every follower learns it
    // (from the leader's next message; openraft 0.9 publishes no commit index of its own).
    let status = leader.raft.status();
    assert!(status.applied_index.is_some(), "{status:?}");
    assert!(status.commit_index >= status.applied_index, "{status:?}");
    for node in &nodes {
        let what = format!("node {} to know the leader's commit index", node.id());
        test_helper::wait_for(&what, CONVERGE, || async {
            let known = node.raft.status();
            known.commit_index >= status.commit_index && known.commit_index >= known.applied_index
        })
        .await;
    }

    for node in &nodes {
        let seen = node
            .raft
            .read(Get::All, ReadConsistency::Linearizable)
            .await;
        assert_eq!(
            seen.expect("linearizable read"),
            expected,
            "node {}",
            node.id()
        );
    }
    // Local reads converge too (without a deadline-free assert: replication is asynchronous).
    for node in &nodes {
        let what = format!("node {} to apply every write locally", node.id());
        test_helper::wait_for(&what, CONVERGE, || async {
            node.raft.read(Get::All, ReadConsistency::Local).await.ok() == Some(expected.clone())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_follower_is_forwarded_to_the_leader() {
    let nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();

    let previous = follower
        .raft
        .write(Set("x".into(), 7))
        .await
        .expect("forwarded write");
    assert_eq!(previous, None);
    let leader = by_id(&nodes, leader_id);
    let seen = leader
        .raft
        .read(Get::Key("x".into()), ReadConsistency::Linearizable)
        .await;
    assert_eq!(seen.unwrap(), BTreeMap::from([("x".to_string(), 7)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarding_a_follower_answers_not_leader() {
    let nodes = start_cluster(3, |_| config(3).with_forward_to_leader(false)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();

    let err = follower.raft.write(Set("x".into(), 7)).await.unwrap_err();
    assert!(
        matches!(err, RaftError::NotLeader { leader: Some(id) } if id == leader_id),
        "{err:?}"
    );
    let err = follower
        .raft
        .read(Get::All, ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert!(matches!(err, RaftError::NotLeader { .. }), "{err:?}");
    // A local read on the follower is still served.
    assert!(follower
        .raft
        .read(Get::All, ReadConsistency::Local)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_committed_write() {
    let mut nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let old_leader = wait_for_leader(&all).await;

    let mut expected = BTreeMap::new();
    for i in 0..30u64 {
        let key = format!("k{i}");
        by_id(&nodes, old_leader)
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        expected.insert(key, i);
    }

    // Crash the leader: drop it without a graceful shutdown.
    let index = nodes.iter().position(|n| n.id() == old_leader).unwrap();
    drop(nodes.remove(index));

    let survivors: Vec<_> = nodes.iter().collect();
    let elected = tokio::time::Instant::now();
    let new_leader = wait_for_leader(&survivors).await;
    assert_ne!(new_leader, old_leader);
    println!(
        "new leader after {:?} (election timeout max {ELECTION_MAX:?})",
        elected.elapsed()
    );

    let leader = by_id(&nodes, new_leader);
    let seen = leader
        .raft
        .read(Get::All, ReadConsistency::Linearizable)
        .await;
    assert_eq!(seen.expect("linearizable read"), expected);

    // The surviving majority still commits, and both survivors read it.
    leader
        .raft
        .write(Set("after".into(), 1))
        .await
        .expect("write after fail-over");
    expected.insert("after".into(), 1);
    for node in &nodes {
        let seen = tokio::time::timeout(
            Duration::from_secs(10),
            node.raft.read(Get::All, ReadConsistency::Linearizable),
        )
        .await
        .expect("read finishes");
        assert_eq!(
            seen.expect("linearizable read"),
            expected,
            "node {}",
            node.id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_says_so_and_its_writes_end_at_their_deadline() {
    let mut nodes = start_cluster(3, |_| config(3)).await;
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_raft = by_id(&nodes, leader).raft.clone();
    test_helper::wait_for("the leader holds a quorum", CONVERGE, || async {
        leader_raft.has_quorum()
    })
    .await;
    for follower in nodes.iter().filter(|n| n.id() != leader) {
        assert!(!follower.raft.has_quorum(), "a follower holds no quorum");
    }
    leader_raft
        .write_within(Set("a".into(), 1), CONVERGE)
        .await
        .expect("a write with a quorum");

    // Both followers go: the leader keeps its role, loses its quorum within a lease, and a
    // write ends at its deadline with a typed error instead of hanging.
    let (followers, rest): (Vec<_>, Vec<_>) = nodes.drain(..).partition(|n| n.id() != leader);
    for follower in followers {
        follower.node.shutdown().await;
    }
    test_helper::wait_for(
        "the leader notices it lost its quorum",
        CONVERGE,
        || async { !leader_raft.has_quorum() },
    )
    .await;
    assert!(leader_raft.is_leader(), "openraft 0.9 keeps the role");
    let deadline = Duration::from_millis(300);
    match leader_raft.write_within(Set("b".into(), 2), deadline).await {
        Err(RaftError::QuorumUnavailable) => {}
        other => panic!("expected QuorumUnavailable, got {other:?}"),
    }
    match leader_raft
        .read_within(Get::All, ReadConsistency::Linearizable, deadline)
        .await
    {
        Err(RaftError::QuorumUnavailable) => {}
        other => panic!("expected QuorumUnavailable, got {other:?}"),
    }
    for node in rest {
        node.node.shutdown().await;
    }
}

/// Dropping the last handle stops Raft on that node (the extension rule): the others stop
/// hearing from it as leader and elect another, while the node itself keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_leaders_last_handle_stops_raft_there() {
    let mut nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader = wait_for_leader(&all).await;
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    let RaftNode { node, raft } = nodes.remove(at);
    let clone = raft.clone();
    drop(raft);
    assert_eq!(clone.role(), Role::Leader, "a clone keeps it running");
    drop(clone);

    let rest: Vec<_> = nodes.iter().collect();
    let next = wait_for_leader(&rest).await;
    assert_ne!(next, leader);
    assert!(
        node.live_members().iter().any(|m| m.node_id == next),
        "the node itself is still a cluster member"
    );
    node.shutdown().await;
}

/// A node that stalled until it was held dead, and whose id was started again elsewhere,
/// stops Raft once it is back and sees its restart: two processes under one id could vote
/// twice in a term. Its handle then refuses calls with `RaftError::Superseded`, and the
/// cluster goes on with the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_stall_stops_raft_once_it_sees_its_restart() {
    let first = start(1, &[], config(3)).await;
    let seeds = [first.seed()];
    let second = start(2, &seeds, config(3)).await;
    let (zombie, zombie_raft) = StallableNode::start_with(
        node_builder(3, &seeds),
        Box::new(|node| {
            Box::pin(async move {
                node.add_extension(RaftExtension::new(KvMachine::default(), config(3)))
                    .await
                    .expect("raft starts")
            })
        }),
    )
    .await;
    wait_for_leader_of(&[&first.raft, &second.raft, &zombie_raft]).await;
    zombie_raft
        .write(Set("before".into(), 1))
        .await
        .expect("a member writes");

    // The restart starts from an empty log, like every node here (in memory); it catches
    // up from the leader.
    let restart = async {
        let restarted = start(3, &seeds, config(3)).await;
        let at = restarted.node.me().public_addr;
        (restarted, at)
    };
    let (restarted, newer) = zombie
        .replaced_while_stalled(
            &[first.node.handle(), second.node.handle()],
            restart,
            CONVERGE,
        )
        .await;
    match zombie_raft.write(Set("after".into(), 2)).await {
        Err(RaftError::Superseded {
            node_id: 3,
            newer: at,
        }) => assert_eq!(at, newer),
        other => panic!("the replaced process wrote: {other:?}"),
    }
    assert!(matches!(
        zombie_raft.read(Get::All, ReadConsistency::Local).await,
        Err(RaftError::Superseded { .. })
    ));
    // openraft itself stopped there: it neither votes nor campaigns any more.
    test_helper::wait_for("raft to stop in the stalled process", CONVERGE, || async {
        matches!(
            zombie_raft.trigger_snapshot().await,
            Err(RaftError::Stopped)
        )
    })
    .await;

    // The cluster goes on, with the restart as node 3.
    wait_for_leader(&[&first, &second, &restarted]).await;
    first
        .raft
        .write(Set("later".into(), 3))
        .await
        .expect("the cluster still writes");
    test_helper::wait_for("the restart to catch up", CONVERGE, || async {
        let read = restarted.raft.read(Get::All, ReadConsistency::Local).await;
        read.is_ok_and(|map| map.get("later") == Some(&3) && map.get("before") == Some(&1))
    })
    .await;
    drop(zombie_raft);
    zombie.stop().await;
    for node in [restarted, second, first] {
        drop(node.raft);
        node.node.shutdown().await;
    }
}

/// A follower that comes back with an empty log under its old id (its disk was wiped or
/// replaced) is caught up from the start. The leader knew it had matched the log up to the
/// last write, so to openraft the follower's log went backwards: without its
/// `loosen-follower-log-revert` feature, that fails a debug assertion in the leader's core
/// (which stops Raft there); release builds skip the assertion and keep the stale progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_with_an_empty_log_is_caught_up() {
    let mut nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader = wait_for_leader(&all).await;
    let wiped = nodes
        .iter()
        .map(|n| n.id())
        .find(|id| *id != leader)
        .unwrap();
    for i in 0..10u64 {
        by_id(&nodes, leader)
            .raft
            .write(Set(format!("k{i}"), i))
            .await
            .expect("write commits");
    }
    test_helper::wait_for(
        "the leader to match the follower's log",
        CONVERGE,
        || async { by_id(&nodes, leader).raft.peer_lag().get(&wiped) == Some(&0) },
    )
    .await;

    // Crash it, and once the others hold it dead (a live id is refused at connect), start
    // its id again with nothing.
    let index = nodes.iter().position(|n| n.id() == wiped).unwrap();
    drop(nodes.remove(index));
    test_helper::wait_for("the crashed follower to be held dead", CONVERGE, || async {
        nodes
            .iter()
            .all(|n| !n.node.live_members().iter().any(|m| m.node_id == wiped))
    })
    .await;
    let seeds = [by_id(&nodes, leader).seed()];
    nodes.push(start(wiped, &seeds, config(3)).await);

    by_id(&nodes, leader)
        .raft
        .write(Set("after".into(), 10))
        .await
        .expect("the leader still commits");
    let back = by_id(&nodes, wiped);
    test_helper::wait_for("the wiped follower to catch up", CONVERGE, || async {
        let read = back.raft.read(Get::All, ReadConsistency::Local).await;
        read.is_ok_and(|map| map.len() == 11)
    })
    .await;
    let all: Vec<_> = nodes.iter().collect();
    assert_eq!(
        wait_for_leader(&all).await,
        leader,
        "the leader kept running"
    );
    for node in nodes {
        drop(node.raft);
        node.node.shutdown().await;
    }
}
