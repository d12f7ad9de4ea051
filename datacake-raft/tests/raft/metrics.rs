//! What Raft records through the `metrics` facade.

use test_helper::metrics::capture_async_probed;

use crate::fixtures::*;

#[test]
fn writes_leader_changes_term_role_and_applied_index_are_recorded() {
    let ((applied, writes), m) = capture_async_probed(|probe| async move {
        let node = start(1, &[], config(1)).await;
        wait_for_leader(&[&node]).await;
        node.raft.write(Set("a".into(), 1)).await.unwrap();
        node.raft.write(Set("b".into(), 2)).await.unwrap();
        let applied = node.raft.status().applied_index.expect("writes applied");
        // (A look takes the histograms' values: count the writes' first.)
        let writes = probe
            .now()
            .histogram("datacake_raft_write_duration_seconds", &[("outcome", "ok")])
            .len();
        // The metrics task looks at openraft's metrics at most every 100 ms: wait for it.
        test_helper::wait_for("the leader change and the applied index", CONVERGE, || {
            let now = probe.now();
            async move {
                now.counter("datacake_raft_leader_changes_total", &[]) >= 1
                    && now
                        .gauge("datacake_raft_applied_index", &[])
                        .is_some_and(|v| v >= applied as f64)
            }
        })
        .await;
        node.node.shutdown().await;
        (applied, writes)
    });
    assert_eq!(writes, 2, "{:?}", m.names());
    assert!(m.gauge("datacake_raft_term", &[]).is_some_and(|t| t >= 1.0));
    // The last value may be from the shutdown (no longer leading): recorded either way.
    assert!(m
        .gauge("datacake_raft_is_leader", &[])
        .is_some_and(|v| v == 0.0 || v == 1.0));
    let recorded = m
        .gauge("datacake_raft_applied_index", &[])
        .expect("applied index recorded");
    assert!(recorded >= applied as f64, "{recorded} of {applied}");
}

/// A leader with a durable log copies its entries to the voters ahead of its own flush, and
/// their logs take the copies (`datacake_raft_early_copies_total{outcome="taken"}`).
#[test]
fn a_durable_leaders_early_copies_are_taken_by_its_voters() {
    let dirs: Vec<test_helper::TempDir> = (1..=3)
        .map(|id| test_helper::TempDir::new(&format!("raft-early-{id}")))
        .collect();
    let (_, m) = capture_async_probed(|probe| async move {
        let nodes = start_cluster(3, |id| {
            config(3).with_storage(durable(&dirs[id as usize - 1]))
        })
        .await;
        let refs: Vec<&RaftNode> = nodes.iter().collect();
        let leader = wait_for_leader(&refs).await;
        let leader = by_id(&nodes, leader);
        for i in 0..20 {
            leader.raft.write(Set(format!("k{i}"), i)).await.unwrap();
        }
        test_helper::wait_for("an early copy taken", CONVERGE, || {
            let now = probe.now();
            async move { now.counter("datacake_raft_early_copies_total", &[("outcome", "taken")]) >= 1 }
        })
        .await;
        for node in nodes {
            node.node.shutdown().await;
        }
    });
    assert!(
        m.counter("datacake_raft_early_copies_total", &[("outcome", "taken")]) >= 1,
        "{:?}",
        m.names()
    );
}
