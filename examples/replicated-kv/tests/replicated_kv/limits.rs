//! Limits on what clients can hold: slow headers, stalled bodies and answers, the connection
//! limit, running out of file descriptors; reserved keyspaces.

use std::time::{Duration, Instant};

use test_helper::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::fixtures::{
    free_ports, keep_alive_request, metric, read_until_closed, temp_dir, wait_for_metrics, KvNode,
    DEADLINE,
};

/// A client that sends half a request line, or nothing, is cut off after the header-read
/// timeout; a prompt client is unaffected.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let dir = temp_dir("slow-headers");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path())
        .with_args(&["--header-read-timeout-ms", "500"]);
    node.start();
    node.wait_for_members(1).await;

    let started = Instant::now();
    let mut half = TcpStream::connect(("127.0.0.1", node.http_port))
        .await
        .unwrap();
    half.write_all(b"GET /hea").await.unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", node.http_port))
        .await
        .unwrap();
    for (name, stream) in [("half a request line", &mut half), ("nothing", &mut silent)] {
        let received = read_until_closed(stream, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("a connection that sent {name} was still open after 20 s"));
        let answer = String::from_utf8_lossy(&received);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{name}: {answer}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    let reply = node.get("/health").await;
    assert_eq!(reply.status, 200);
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// A request whose body stops coming gets 408 `body_timeout` after `--stall-timeout-ms`
/// and its connection is closed, freeing its slot (the only one) for the next client.
#[tokio::test]
async fn a_body_that_stops_coming_is_cut_off() {
    let dir = temp_dir("stalled-body");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path()).with_args(&[
        "--stall-timeout-ms",
        "500",
        "--max-connections",
        "1",
    ]);
    node.start();
    node.wait_for_members(1).await;

    test_helper::http::assert_a_stalled_body_is_cut_off(
        node.http_port,
        "/ks/stalled",
        Duration::from_millis(500),
        DEADLINE,
    )
    .await;
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// A client that stops reading a large answer is cut off after `--stall-timeout-ms`: its
/// connection closes with the answer unfinished.
#[tokio::test]
async fn an_answer_the_client_does_not_read_is_cut_off() {
    let dir = temp_dir("stalled-answer");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path()).with_args(&[
        "--stall-timeout-ms",
        "500",
        "--max-body-bytes",
        "33554432",
    ]);
    node.start();
    node.wait_for_members(1).await;
    // Far more than the socket buffers between the server and a client that reads nothing
    // can hold (the server's send buffer grows to 4 MiB at most by default on Linux).
    let value = vec![b'v'; 16 << 20];
    assert_eq!(node.put("/ks/big", &value).await.status, 204);

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket
        .connect(([127, 0, 0, 1], node.http_port).into())
        .await
        .unwrap();
    reader
        .write_all(b"GET /ks/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Open are this scrape's connection and, until it is cut off, the stalled one.
    wait_for("the stalled connection to be closed", DEADLINE, || async {
        let metrics = wait_for_metrics(node.http_port, "the node to answer").await;
        metric(&metrics, "kv_http_connections_open") == 1
    })
    .await;
    let received = read_until_closed(&mut reader, DEADLINE)
        .await
        .expect("the connection was closed");
    let answer = String::from_utf8_lossy(&received[..received.len().min(12)]);
    assert_eq!(answer, "HTTP/1.1 200");
    assert!(
        received.len() < value.len(),
        "the whole answer came: {} bytes",
        received.len()
    );
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// Sends the head of a `PUT` of `len` body bytes asking for `100 Continue`, and waits for
/// it: the server has begun the request (its handler reads the body), so the connection is
/// busy until the body is sent.
async fn begin_put(port: u16, len: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "PUT /ks/slow HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert!(n > 0, "closed before 100 Continue");
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 100"), "{seen}");
    stream
}

/// At `--max-connections`, a new connection takes the slot of the connection idle longest,
/// so clients that connect and send nothing cannot keep others out until the header-read
/// timeout. A connection with a request in progress is never closed for it: with every
/// connection busy, a new one is closed at once, unanswered (and counted).
#[tokio::test]
async fn at_the_connection_limit_the_connection_idle_longest_gives_way() {
    let dir = temp_dir("max-connections");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path()).with_args(&[
        "--max-connections",
        "2",
        "--header-read-timeout-ms",
        "120000",
        "--stall-timeout-ms",
        "120000",
    ]);
    node.start();
    node.wait_for_members(1).await;
    let port = node.http_port;

    // Two connections that send nothing take both slots (accepted in the order they
    // connected, before the next one)...
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _silent_too = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // ...and a client is served all the same, long before the header-read timeout: the
    // first silent one gave way.
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let reply = keep_alive_request(&mut client, "/health")
        .await
        .expect("the client at the limit was served");
    assert_eq!(reply.status, 200);
    let received = read_until_closed(&mut silent, Duration::from_secs(10))
        .await
        .expect("the silent connection idle longest was closed");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );

    // Two requests in progress push out the two idle connections and take both slots...
    let mut first = begin_put(port, 10).await;
    let second = begin_put(port, 10).await;
    // ...so a third is closed at once without an answer.
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let received = read_until_closed(&mut third, Duration::from_secs(10))
        .await
        .expect("the connection over the limit was kept open");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );

    // The requests in progress were not touched: the first one finishes.
    first.write_all(b"0123456789").await.unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(DEADLINE, first.read_exact(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");

    // Now idle, it gives way to the scrape.
    let metrics = wait_for_metrics(port, "the node to answer").await;
    assert!(
        metric(&metrics, "kv_http_connections_refused_total") >= 1,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "kv_http_connections_evicted_total") >= 3,
        "{metrics}"
    );
    // (A request still in progress would hold up the graceful shutdown.)
    drop(second);
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// Out of file descriptors, the accept loop pauses (doubling up to a second) instead of
/// retrying at once, and serves again once descriptors are free.
#[cfg(unix)]
#[tokio::test]
async fn accept_backs_off_when_out_of_file_descriptors() {
    let dir = temp_dir("emfile");
    let ports = free_ports(2);
    let limit = 64;
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path())
        .with_args(&["--header-read-timeout-ms", "120000"])
        .with_fd_limit(limit);
    node.start();
    node.wait_for_members(1).await;

    // Hold connections until the node has no descriptor left for the next one.
    let in_use = std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .map(|fds| fds.count() as u32)
        .unwrap_or(limit / 2);
    let mut held = Vec::new();
    for _ in 0..(limit - in_use + 4) {
        held.push(
            TcpStream::connect(("127.0.0.1", node.http_port))
                .await
                .unwrap(),
        );
    }
    wait_for(
        "the accept loop to back off to a one second pause",
        DEADLINE,
        || {
            let log = node.log();
            std::future::ready(log.contains("accept failed") && log.contains("delay=1s"))
        },
    )
    .await;

    // Descriptors free again: the node serves, and the failures were a handful, not a spin.
    drop(held);
    let metrics = wait_for_metrics(node.http_port, "the node to serve again").await;
    let failures = metric(&metrics, "kv_http_accept_errors_total");
    assert!((6..=30).contains(&failures), "accept failures: {failures}");
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// Reserved keyspaces are a client error for every method, never a 500.
#[tokio::test]
async fn reserved_keyspaces_are_bad_requests() {
    let dir = temp_dir("reserved");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path());
    node.start();
    node.wait_for_members(1).await;
    for keyspace in [
        "__datacake.members",
        "__datacake.purge_watermarks",
        "__datacake.x",
    ] {
        for consistency in ["", "?consistency=none", "?consistency=all"] {
            let path = format!("/{keyspace}/alice{consistency}");
            for reply in [
                node.get(&path).await,
                node.put(&path, b"x").await,
                node.delete(&path).await,
            ] {
                assert_eq!(
                    (reply.status, reply.error_code().as_str()),
                    (400, "bad_keyspace"),
                    "{path}"
                );
            }
        }
    }
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}
