//! Limits on what clients can hold: a request body that stops coming.

use std::time::Duration;

use crate::fixtures::{free_ports, temp_dir, Node, DEADLINE};

/// A request whose body stops coming gets 408 `body_timeout` after `--stall-timeout-ms`
/// and its connection is closed, freeing its slot (the only one) for the next client.
#[tokio::test]
async fn a_body_that_stops_coming_is_cut_off() {
    let dir = temp_dir("stalled-body");
    let ports = free_ports(2);
    let mut node = Node::with_flags(
        1,
        (ports[0], ports[1]),
        dir.path(),
        1,
        &[],
        &["--stall-timeout-ms", "500", "--max-connections", "1"],
    );
    node.start();
    node.wait_healthy().await;

    test_helper::http::assert_a_stalled_body_is_cut_off(
        node.http_port,
        "/stalled",
        Duration::from_millis(500),
        DEADLINE,
    )
    .await;
    let status = node.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
}
