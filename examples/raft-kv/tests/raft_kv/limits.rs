//! Limits on what clients can hold: a request body that stops coming.

use std::time::{Duration, Instant};

use test_helper::http::{read_until_closed, request, request_in_flight};
use test_helper::wait_for_value;

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

    // The handler is reading a value of 10 bytes that never comes. (The slot of the last
    // request's connection may take a moment to come back: retry until it is taken.)
    let port = node.http_port;
    let mut stalled = wait_for_value("a request in flight", DEADLINE, || async move {
        request_in_flight(port, "/stalled", 10).await.ok()
    })
    .await;
    let started = Instant::now();
    let received = read_until_closed(&mut stalled, DEADLINE)
        .await
        .expect("a connection whose body stopped was still open");
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    // The slot is free again: the next clients are served. (Each waits for the last one's
    // slot to come back.)
    let served = |path: &'static str| {
        wait_for_value("the slot to come free", DEADLINE, move || async move {
            request(port, "GET", path, b"").await.ok()
        })
    };
    assert_eq!(served("/health").await.status, 200);
    assert_eq!(served("/stalled").await.status, 404, "nothing was written");
    let status = node.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
}
