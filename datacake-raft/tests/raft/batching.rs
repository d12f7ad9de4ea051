//! Concurrent writes share log entries; each writer still gets its own response, in the
//! order the commands were applied, and an oversized command is refused.

use std::collections::BTreeMap;

use datacake_raft::{RaftError, ReadConsistency};

use crate::fixtures::{by_id, config, start_cluster, wait_for_leader, Get, Set};

/// Writes on the leader and forwarded from a follower, 200 at once: they take fewer than 200
/// log entries, and every write sees exactly the value it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_response() {
    const WRITES: u64 = 200;
    let nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;
    let leader = by_id(&nodes, leader_id);
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let before = leader.raft.status().last_log_index.unwrap_or(0);

    // Two writes per key, one after the other: the second must see the first's value.
    let writes = (0..WRITES).map(|i| {
        let raft = if i % 2 == 0 {
            leader.raft.clone()
        } else {
            follower.raft.clone()
        };
        async move {
            let key = format!("k{i}");
            let first = raft.write(Set(key.clone(), i)).await?;
            let second = raft.write(Set(key, i + 1000)).await?;
            Ok::<_, RaftError>((i, first, second))
        }
    });
    for result in futures::future::join_all(writes).await {
        let (i, first, second) = result.expect("write");
        assert_eq!(first, None, "k{i} had a value before its first write");
        assert_eq!(
            second,
            Some(i),
            "k{i}'s second write replaced the wrong value"
        );
    }

    let entries = leader.raft.status().last_log_index.unwrap_or(0) - before;
    assert!(
        entries < 2 * WRITES,
        "{} writes took {entries} log entries",
        2 * WRITES
    );
    let all = leader
        .raft
        .read(Get::All, ReadConsistency::Linearizable)
        .await
        .expect("read");
    let expected: BTreeMap<String, u64> =
        (0..WRITES).map(|i| (format!("k{i}"), i + 1000)).collect();
    assert_eq!(all, expected);
}

/// A command too large to replicate is refused before it is proposed, on a follower too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_refused_with_a_typed_error() {
    let nodes = start_cluster(3, |_| config(3)).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;
    let before = by_id(&nodes, leader_id).raft.status().last_log_index;
    for node in &nodes {
        let huge = "x".repeat(2 << 20);
        match node.raft.write(Set(huge, 1)).await {
            Err(RaftError::CommandTooLarge { size, limit }) => {
                assert!(size > limit, "{size} <= {limit}");
            }
            other => panic!("node {}: {other:?}", node.id()),
        }
    }
    // Nothing was proposed, and a normal write still goes through.
    assert_eq!(
        by_id(&nodes, leader_id).raft.status().last_log_index,
        before
    );
    let previous = nodes[0].raft.write(Set("small".into(), 1)).await;
    assert_eq!(previous.expect("write"), None);
}
