//! What the node records through the `metrics` facade.

use test_helper::metrics::capture_async;

use crate::fixtures::*;

#[test]
fn membership_gauges_and_changes_are_recorded() {
    let ((), m) = capture_async(async {
        let a = start(1, &[]).await;
        let b = start(2, &[&a]).await;
        wait_for_view(&[&a, &b], &[1, 2]).await;
        b.shutdown().await;
        wait_for_view(&[&a], &[1]).await;
        a.shutdown().await;
    });
    let changes = "datacake_node_membership_changes_total";
    // Each node's first view holds at least itself; a saw b join, then leave.
    assert!(
        m.counter(changes, &[("change", "joined")]) >= 3,
        "{:?}",
        m.names()
    );
    assert!(m.counter(changes, &[("change", "left")]) >= 1);
    assert_eq!(m.label_values(changes, "change"), ["joined", "left"]);
    // Both nodes of this process set the gauges (a leaving node's last view may be empty:
    // it no longer counts itself).
    let live = m
        .gauge("datacake_node_live_members", &[])
        .expect("recorded");
    assert!(live <= 2.0, "{live}");
    assert_eq!(m.gauge("datacake_node_dead_members", &[]), Some(0.0));
}
