//! The durable store: a restarted node keeps its log, vote and membership.

use std::collections::BTreeMap;

use datacake_raft::{ReadConsistency, Role};

use crate::fixtures::{
    by_id, config, start, start_cluster, wait_for_leader, Get, Set, TempDir, CONVERGE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_its_durable_store_rejoins_with_its_log() {
    let dirs: Vec<TempDir> = (1..=3)
        .map(|i| TempDir::new(&format!("restart-{i}")))
        .collect();
    let storage = |id: u32| dirs[id as usize - 1].storage();
    // Snapshots every few entries with nothing kept, so the restart also needs the snapshot.
    let durable = |id: u32| {
        config(3)
            .with_storage(storage(id))
            .with_snapshot_policy(4, 0)
    };
    let mut nodes = start_cluster(3, durable).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;

    let mut expected = BTreeMap::new();
    for i in 0..10u64 {
        let key = format!("k{i}");
        by_id(&nodes, leader_id)
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        expected.insert(key, i);
    }
    let index = nodes.iter().position(|n| n.id() != leader_id).unwrap();
    let follower = nodes.remove(index);
    let follower_id = follower.id();
    test_helper::wait_for("the follower to apply every write", CONVERGE, || async {
        follower
            .raft
            .read(Get::All, ReadConsistency::Local)
            .await
            .ok()
            == Some(expected.clone())
    })
    .await;
    test_helper::wait_for(
        "the follower to snapshot and purge its log",
        CONVERGE,
        || async { follower.raft.metrics().purged_index.is_some() },
    )
    .await;
    let before = expected.clone();
    let log_before = follower.raft.metrics().last_log_index;
    let term_before = follower.raft.metrics().term;
    drop(follower.raft);
    follower.node.shutdown().await;

    // The remaining majority keeps committing while the follower is down.
    for i in 10..15u64 {
        let key = format!("k{i}");
        by_id(&nodes, leader_id)
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        expected.insert(key, i);
    }

    // First restart it alone (no seeds, on a new port nobody knows): whatever it has now
    // came from its own disk — the log, vote, membership, and the state machine rebuilt from
    // the persisted snapshot plus the committed log after it.
    let alone = start(follower_id, &[], durable(follower_id)).await;
    test_helper::wait_for(
        "the isolated node to load its state from disk",
        CONVERGE,
        || async {
            let m = alone.raft.metrics();
            m.last_log_index >= log_before && m.voters == [1, 2, 3].into()
        },
    )
    .await;
    assert!(alone.raft.metrics().term >= term_before);
    assert_ne!(alone.raft.role(), Role::Inactive);
    test_helper::wait_for(
        "the isolated node to rebuild its state machine",
        CONVERGE,
        || async {
            alone.raft.read(Get::All, ReadConsistency::Local).await.ok() == Some(before.clone())
        },
    )
    .await;
    drop(alone.raft);
    alone.node.shutdown().await;

    // Then restart it in the cluster: it rejoins under its id with its log and catches up.
    let seed = by_id(&nodes, leader_id).seed();
    let restarted = start(follower_id, &[seed], durable(follower_id)).await;
    test_helper::wait_for("the restarted node to catch up", CONVERGE, || async {
        restarted
            .raft
            .read(Get::All, ReadConsistency::Local)
            .await
            .ok()
            == Some(expected.clone())
    })
    .await;
    let seen = restarted
        .raft
        .read(Get::All, ReadConsistency::Linearizable)
        .await;
    assert_eq!(seen.expect("linearizable read"), expected);
}
