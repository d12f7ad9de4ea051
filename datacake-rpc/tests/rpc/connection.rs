//! Network failures: refused connections, shutdown mid-call, deadlines, restarts.

use std::time::Duration;

use datacake_rpc::{Channel, ErrorCode, RequestContext, RpcClient, Server};

use crate::fixtures::*;

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    // Take a free port and release it, so nothing listens there.
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = RpcClient::<EchoService>::new(Channel::connect(addr));
    let err = client.send(&Echo { data: vec![] }).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
}

#[tokio::test]
async fn deadline_passed_is_a_timeout() {
    let fx = Fixture::start().await;
    let mut client = fx.client::<MiscService>();
    client.set_timeout(Duration::from_millis(200));
    let err = client.send(&Hang).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");

    // A per-call deadline overrides the client's.
    let client = fx.client::<MiscService>();
    let ctx = RequestContext::new().with_timeout(Duration::from_millis(50));
    let err = client.send_with_context(&Hang, ctx).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");

    // The channel is still usable afterwards.
    let reply = fx
        .client::<EchoService>()
        .send(&Echo { data: vec![3] })
        .await
        .unwrap();
    assert_eq!(reply.data.as_slice(), &[3]);
}

#[tokio::test]
async fn server_shut_down_mid_call_is_a_connection_error() {
    let server = Server::builder()
        .shutdown_grace(Duration::from_millis(100))
        .listen(localhost())
        .await
        .unwrap();
    let mut fx = Fixture::with_server(server);
    let client = fx.client::<MiscService>();
    let call = tokio::spawn(async move { client.send(&Hang).await });
    tokio::time::timeout(DEADLINE, fx.entered.recv())
        .await
        .unwrap()
        .unwrap();

    tokio::time::timeout(DEADLINE, fx.server.shutdown())
        .await
        .expect("shutdown is bounded");
    let err = tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let fx = Fixture::start().await;
    let client = fx.client::<MiscService>();
    // A streaming reply that is still being produced when shutdown starts.
    let reply = client
        .send(&Stream {
            chunks: 200,
            chunk_size: 1024,
        })
        .await
        .unwrap();
    let shutdown = tokio::spawn(async move {
        fx.server.shutdown().await;
        fx
    });
    let body = reply.into_inner().collect(1 << 20).await.unwrap();
    assert_eq!(body.len(), 200 * 1024);
    let fx = tokio::time::timeout(DEADLINE, shutdown)
        .await
        .unwrap()
        .unwrap();
    // And no new calls are served.
    let err = fx
        .client::<EchoService>()
        .send(&Echo { data: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
}

#[tokio::test]
async fn a_restarted_server_is_reachable_through_the_same_channel() {
    let fx = Fixture::start().await;
    let addr = fx.addr();
    let client = fx.client::<EchoService>();
    assert_eq!(
        client
            .send(&Echo { data: vec![1] })
            .await
            .unwrap()
            .data
            .as_slice(),
        &[1]
    );

    fx.server.shutdown().await;
    drop(fx.server);
    let err = client.send(&Echo { data: vec![2] }).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");

    let restarted = Server::listen(addr).await.unwrap();
    restarted.add_service(EchoService);
    assert_eq!(
        client
            .send(&Echo { data: vec![3] })
            .await
            .unwrap()
            .data
            .as_slice(),
        &[3]
    );
}

/// A channel's connection lives in a task of the runtime that opened it. When that runtime
/// shuts down, the connection must go with it, so that a call from another runtime opens a
/// new one instead of writing to a socket nobody drives any more.
#[test]
fn a_channel_outlives_the_runtime_that_opened_its_connection() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let server_side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_side.block_on(async {
        let server = Server::listen(localhost()).await.unwrap();
        server.add_service(EchoService);
        server
    });
    let client = RpcClient::<EchoService>::new(Channel::connect(server.local_addr()));
    let echo = |client: RpcClient<EchoService>, byte: u8| async move {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.send(&Echo { data: vec![byte] }),
        )
        .await
        .expect("the call ends within 10 s")
        .unwrap();
        assert_eq!(reply.data.as_slice(), &[byte]);
    };
    let first = runtime();
    first.block_on(echo(client.clone(), 1));
    drop(first);
    runtime().block_on(echo(client.clone(), 2));
    server_side.block_on(server.shutdown());
}

/// A "server" that reads what the channel sends, then answers with `reply` and keeps the
/// connection open: whatever it sends, the call fails with a connection error (never a
/// panic, never a hang).
async fn call_a_server_that_answers(reply: &'static [u8]) -> datacake_rpc::Status {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // The preface and the first frames.
        let mut buf = [0u8; 256];
        let _ = socket.read(&mut buf).await.unwrap();
        socket.write_all(reply).await.unwrap();
        // Held open until the client gives up on it.
        let _ = socket.read(&mut buf).await;
        socket
    });
    let client = RpcClient::<EchoService>::new(Channel::connect(addr));
    let err = tokio::time::timeout(DEADLINE, client.send(&Echo { data: vec![1] }))
        .await
        .expect("the call ends")
        .unwrap_err();
    server.abort();
    err
}

#[tokio::test]
async fn a_server_that_breaks_http2_fails_the_call_cleanly() {
    // Not HTTP/2 at all: an HTTP/1.1 reply.
    let err = call_a_server_that_answers(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
    // A frame larger than the channel's frame size limit (type DATA, length 2^24 - 1).
    let err = call_a_server_that_answers(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01").await;
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
    // A push promise, though the channel disabled push.
    let err = call_a_server_that_answers(
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x04\x05\x04\x00\x00\x00\x01\x00\x00\x00\x02",
    )
    .await;
    assert_eq!(err.code(), ErrorCode::Connection, "{err}");
}
