//! What Raft records through the `metrics` facade.

use test_helper::metrics::capture_async;

use crate::fixtures::*;

#[test]
fn writes_leader_changes_term_role_and_applied_index_are_recorded() {
    let (applied, m) = capture_async(async {
        let node = start(1, &[], config(1)).await;
        wait_for_leader(&[&node]).await;
        node.raft.write(Set("a".into(), 1)).await.unwrap();
        node.raft.write(Set("b".into(), 2)).await.unwrap();
        let applied = node.raft.status().applied_index.expect("writes applied");
        node.node.shutdown().await;
        applied
    });
    let writes = m.histogram("datacake_raft_write_duration_seconds", &[("outcome", "ok")]);
    assert_eq!(writes.len(), 2, "{:?}", m.names());
    assert!(m.counter("datacake_raft_leader_changes_total", &[]) >= 1);
    assert!(m.gauge("datacake_raft_term", &[]).is_some_and(|t| t >= 1.0));
    // The last value may be from the shutdown (no longer leading): recorded either way.
    assert!(m
        .gauge("datacake_raft_is_leader", &[])
        .is_some_and(|v| v == 0.0 || v == 1.0));
    // The metrics task may be stopped before it sees the last update: at most what the
    // handle reported, and at least the leader's first entry.
    let recorded = m
        .gauge("datacake_raft_applied_index", &[])
        .expect("applied index recorded");
    assert!(
        (1.0..=applied as f64).contains(&recorded),
        "{recorded} of {applied}"
    );
}
