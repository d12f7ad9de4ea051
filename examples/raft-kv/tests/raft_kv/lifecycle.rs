//! The lifecycle: `/health` is `serving` once the node is in its cluster; SIGTERM makes it
//! leave (the peer's `/cluster` drops it) and exit 0.

use test_helper::http::health_status;
use test_helper::wait_for;

use crate::fixtures::{free_ports, temp_dir, wait_for_leader, Node, DEADLINE};

#[tokio::test]
async fn sigterm_leaves_the_cluster_and_exits_0() {
    let dir = temp_dir("leave");
    let ports = free_ports(4);
    let mut first = Node::with_flags(1, (ports[0], ports[1]), dir.path(), 2, &[], &[]);
    let mut second = Node::with_flags(2, (ports[2], ports[3]), dir.path(), 2, &[ports[0]], &[]);
    first.start();
    second.start();
    wait_for_leader(&[&first, &second]).await;
    second.wait_healthy().await;
    assert_eq!(
        health_status(second.http_port).await.as_deref(),
        Some("serving")
    );
    assert_eq!(members(&first).await, Some(2));

    let status = second.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        health_status(second.http_port).await,
        None,
        "the port is closed"
    );
    wait_for("node 1 to see node 2 leave", DEADLINE, || async {
        members(&first).await == Some(1)
    })
    .await;
    let status = first.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
}

/// How many live members `node`'s `/cluster` lists, if it answers.
async fn members(node: &Node) -> Option<usize> {
    let cluster = node.cluster().await?;
    Some(cluster["members"].as_array()?.len())
}
