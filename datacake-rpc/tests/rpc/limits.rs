//! The server's limits on what it takes from the network, each driven past its limit by a
//! client that misbehaves (an independent h2/hyper client, or raw HTTP/2 frames), while calls
//! on another connection keep succeeding. Every test waits on the server's statistics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use datacake_rpc::{
    async_trait, Body, ErrorCode, Handler, Request, RpcService, Server, ServerBuilder,
    ServiceRegistry, Status,
};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::*;

/// A call on the fixture's own channel (its own connection) still succeeds.
async fn assert_still_serving(fx: &Fixture) {
    let reply = tokio::time::timeout(
        DEADLINE,
        fx.client::<EchoService>().send(&Echo { data: vec![7; 3] }),
    )
    .await
    .expect("a valid call is answered")
    .expect("a valid call succeeds");
    assert_eq!(reply.data.as_slice(), &[7; 3]);
}

async fn start(builder: ServerBuilder) -> Fixture {
    Fixture::with_server(builder.listen(localhost()).await.unwrap())
}

/// An h2 client connection to `addr`, driven in a task (which answers the server's pings).
async fn h2_connect(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    Option<h2::PingPong>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, mut connection) = builder.handshake(stream).await.unwrap();
    let pings = connection.ping_pong();
    (send, pings, tokio::spawn(connection))
}

fn post(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

fn archive<T: datacake_rpc::Message>(value: &T) -> Bytes {
    Bytes::copy_from_slice(
        datacake_rpc::DataView::from_message(value)
            .unwrap()
            .as_bytes(),
    )
}

async fn read_status(body: &mut h2::RecvStream) -> Status {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    Status::from_reply_body(&aligned).expect("an archived Status")
}

/// Counts the calls that reached it, then reads its body to the end.
#[derive(Default)]
struct Holding {
    entered: Arc<AtomicUsize>,
}

impl RpcService for Holding {
    fn service_name() -> &'static str {
        "holding"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Body>();
    }
}

#[async_trait]
impl Handler<Body> for Holding {
    type Reply = ();

    fn path() -> &'static str {
        "hold"
    }

    async fn on_message(&self, request: Request<Body>) -> Result<(), Status> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut body = request.into_inner();
        while body.next_chunk().await.transpose()?.is_some() {}
        Ok(())
    }
}

/// Appends one HTTP/2 frame.
fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    const LIMIT: usize = 100;
    const OPENED: u32 = 10_000;
    let fx = start(Server::builder().max_concurrent_streams(LIMIT as u32)).await;
    let holding = Holding::default();
    let entered = holding.entered.clone();
    fx.server.add_service(holding);

    // A client that ignores the advertised limit: the preface, empty SETTINGS, then HEADERS
    // frames opening `POST /holding/hold` streams whose bodies never come.
    let path = b"/holding/hold";
    // HPACK: `:method: POST` and `:scheme: http` from the static table, `:path` as a literal
    // with an indexed name, not added to the dynamic table.
    let mut headers = vec![0x83, 0x86, 0x04, path.len() as u8];
    headers.extend_from_slice(path);
    let open = |streams: std::ops::Range<u32>| {
        let mut out = BytesMut::new();
        for i in streams {
            frame(&mut out, 0x1, 0x4, 2 * i + 1, &headers);
        }
        out
    };
    let socket = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let mut out = BytesMut::new();
    out.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    frame(&mut out, 0x4, 0, 0, &[]);
    out.extend_from_slice(&open(0..LIMIT as u32 + 200));
    write.write_all(&out).await.unwrap();

    // Reads the server's frames until `refused` streams were reset with REFUSED_STREAM, a
    // GOAWAY came or the connection closed.
    let mut buf = BytesMut::new();
    let mut read_until = async |wanted: u32| {
        let (mut refused, mut goaway) = (0u32, false);
        loop {
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let head = buf.split_to(9);
                let payload = buf.split_to(len);
                match head[3] {
                    0x3 if payload[..] == 7u32.to_be_bytes() => refused += 1,
                    0x7 => goaway = true,
                    _ => {}
                }
            }
            if refused >= wanted || goaway {
                return (refused, goaway);
            }
            if read.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return (refused, goaway);
            }
        }
    };
    // Past the limit, each new stream is refused; the first `LIMIT` reach the handler.
    let (refused, goaway) = tokio::time::timeout(DEADLINE, read_until(200))
        .await
        .unwrap();
    assert_eq!((refused, goaway), (200, false));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while entered.load(Ordering::SeqCst) < LIMIT && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), LIMIT);
    assert_still_serving(&fx).await;

    // The rest of the 10,000: refused too, until h2 has refused so many that it closes the
    // connection (GOAWAY, ENHANCE_YOUR_CALM).
    let _ = write.write_all(&open(LIMIT as u32 + 200..OPENED)).await;
    let (refused, goaway) = tokio::time::timeout(DEADLINE, read_until(OPENED - LIMIT as u32 - 200))
        .await
        .unwrap();
    assert!(refused > 0 || goaway, "refused {refused}");
    assert_eq!(entered.load(Ordering::SeqCst), LIMIT);
    assert_still_serving(&fx).await;
}

/// Answers every call with [`Bulky::REPLY`] bytes, whatever it was sent.
struct Bulky;

impl Bulky {
    const REPLY: usize = 32 << 10;
}

impl RpcService for Bulky {
    fn service_name() -> &'static str {
        "bulky"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Body>();
    }
}

#[async_trait]
impl Handler<Body> for Bulky {
    type Reply = Body;

    fn path() -> &'static str {
        "bulk"
    }

    async fn on_message(&self, _request: Request<Body>) -> Result<Body, Status> {
        Ok(Body::from(vec![5u8; Self::REPLY]))
    }
}

/// A client that sends requests and never reads the replies (its windows wide open, so
/// only the socket holds the replies back): the server stops reading it once 1 MiB of
/// replies waits to be written, and counts the pause, instead of queueing every reply.
#[tokio::test]
async fn a_client_that_does_not_read_its_replies_is_paused_and_counted() {
    const REQUESTS: u32 = 2_000;
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    let fx = start(Server::builder()).await;
    fx.server.add_service(Bulky);
    let path = b"/bulky/bulk";
    let mut headers = vec![0x83, 0x86, 0x04, path.len() as u8];
    headers.extend_from_slice(path);
    let mut out = BytesMut::new();
    out.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // SETTINGS_INITIAL_WINDOW_SIZE at its largest, and the connection's window as wide.
    let mut settings = vec![0, 0x4];
    settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
    frame(&mut out, SETTINGS, 0, 0, &settings);
    frame(
        &mut out,
        WINDOW_UPDATE,
        0,
        0,
        &(MAX_WINDOW - 65_535).to_be_bytes(),
    );
    for i in 0..REQUESTS {
        // END_HEADERS | END_STREAM: no body.
        frame(&mut out, 0x1, 0x5, 2 * i + 1, &headers);
    }
    let socket = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let (_unread, mut write) = socket.into_split();
    // Blocks once the server stops reading.
    let _sending = tokio::spawn(async move { write.write_all(&out).await });
    wait_for(&fx.server, "the connection to pause its reads", |s| {
        s.reads_paused >= 1
    })
    .await;
    assert_still_serving(&fx).await;
}

/// Reads the payload of the frame whose 9-byte header is `head`.
async fn frame_payload(socket: &mut tokio::net::TcpStream, head: &[u8; 9]) -> Vec<u8> {
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tokio::time::timeout(DEADLINE, socket.read_exact(&mut payload))
        .await
        .unwrap()
        .unwrap();
    payload
}

/// After the server's first frame (its SETTINGS, header `first`), sends the HTTP/2 preface
/// and an empty SETTINGS frame and reads until the server acknowledges it: the server has
/// then finished the connection's handshake, so a newer connection does not cut it (see
/// `ServerBuilder::max_connections`).
async fn finish_handshake(socket: &mut tokio::net::TcpStream, first: [u8; 9]) {
    const SETTINGS: u8 = 4;
    const ACK: u8 = 1;
    frame_payload(socket, &first).await;
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    socket
        .write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(DEADLINE, socket.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        frame_payload(socket, &head).await;
        if head[3] == SETTINGS && head[4] & ACK != 0 {
            return;
        }
    }
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    const LIMIT: usize = 16;
    const OPENED: usize = 1_000;
    let fx = start(Server::builder().max_connections(LIMIT)).await;
    // The fixture's channel holds one of the connections.
    assert_still_serving(&fx).await;

    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..OPENED {
        let mut socket = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
        // An accepted connection hears the server's SETTINGS; a refused one is closed.
        let mut first = [0u8; 9];
        match tokio::time::timeout(DEADLINE, socket.read_exact(&mut first))
            .await
            .unwrap()
        {
            Ok(_) => {
                finish_handshake(&mut socket, first).await;
                kept.push(socket);
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!(kept.len(), LIMIT - 1);
    assert_eq!(refused, OPENED - (LIMIT - 1));
    let stats = fx.server.statistics();
    assert_eq!(stats.connections_refused, refused as u64, "{stats:?}");
    assert_eq!(stats.connections_open, LIMIT as u64, "{stats:?}");
    assert_still_serving(&fx).await;

    // A place freed is a place taken.
    drop(kept.pop());
    wait_for(&fx.server, "a connection to close", |s| {
        s.connections_open < LIMIT as u64
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let mut first = [0u8; 9];
    let n = tokio::time::timeout(DEADLINE, socket.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0, "the connection was accepted");
    assert_eq!(fx.server.statistics().connections_refused, refused as u64);
}

#[tokio::test]
async fn idle_connections_are_closed_even_if_they_answer_pings() {
    const OPENED: usize = 50;
    let idle = Duration::from_millis(200);
    let fx = start(Server::builder().idle_timeout(idle)).await;
    let mut drivers = Vec::new();
    for _ in 0..OPENED {
        let (send, pings, driver) = h2_connect(fx.addr(), &h2::client::Builder::new()).await;
        let mut pings = pings.unwrap();
        // Pings keep the TCP connection busy, but open no stream.
        tokio::spawn(async move {
            loop {
                if pings.ping(h2::Ping::opaque()).await.is_err() {
                    return;
                }
                tokio::time::sleep(idle / 4).await;
            }
        });
        drivers.push((send, driver));
    }
    wait_for(&fx.server, "idle connections to close", |s| {
        s.connections_closed_idle == OPENED as u64 && s.connections_open == 0
    })
    .await;
    for (_send, driver) in drivers {
        // The client saw the server go: its connection ended.
        tokio::time::timeout(DEADLINE, driver)
            .await
            .unwrap()
            .unwrap()
            .ok();
    }
    // A busy connection is not idle: the channel's calls go on across several timeouts.
    let client = fx.client::<MiscService>();
    let call = tokio::spawn(async move { client.send(&Hang).await });
    tokio::time::sleep(idle * 3).await;
    assert!(!call.is_finished(), "a call in flight keeps its connection");
    call.abort();
}

/// A peer that ignores the server's GOAWAY and keeps its side open: the server closes its
/// own side once the connection idled out (it had no stream to finish).
#[tokio::test]
async fn an_idle_connection_is_closed_even_if_its_peer_ignores_the_goaway() {
    const GOAWAY: u8 = 7;
    let fx = start(Server::builder().idle_timeout(Duration::from_millis(100))).await;
    let mut socket = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let mut first = [0u8; 9];
    tokio::time::timeout(DEADLINE, socket.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    finish_handshake(&mut socket, first).await;
    // Read (and ignore) what comes until the server closes the connection.
    let mut goaway = false;
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout(DEADLINE, socket.read_exact(&mut head))
            .await
            .expect("the server closed the idle connection in time")
        {
            Ok(_) => {
                goaway |= head[3] == GOAWAY;
                frame_payload(&mut socket, &head).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading failed: {e}"),
        }
    }
    assert!(goaway, "the server said goodbye first");
    wait_for(&fx.server, "the connection to be counted closed", |s| {
        s.connections_closed_idle >= 1
    })
    .await;
}

#[tokio::test]
async fn a_channel_reconnects_after_its_connection_idled_out() {
    let fx = start(Server::builder().idle_timeout(Duration::from_millis(100))).await;
    assert_still_serving(&fx).await;
    wait_for(&fx.server, "the channel's connection to idle out", |s| {
        s.connections_closed_idle == 1 && s.connections_open == 0
    })
    .await;
    assert_still_serving(&fx).await;
    assert_eq!(fx.server.statistics().connections_open, 1);
}

#[tokio::test]
async fn a_slow_loris_body_times_out_and_is_freed() {
    let fx = start(Server::builder().body_timeout(Duration::from_millis(300))).await;
    let stream = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One chunk, then nothing, never the end.
    let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
        1u8;
        1000
    ])))]);
    let body = StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
    let request = http::Request::post(format!("http://{}/echo/echo", fx.addr()))
        .body(body)
        .unwrap();
    let call = tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        let code = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (code, bytes)
    });
    wait_for(&fx.server, "the first chunk to be buffered", |s| {
        s.buffered_bytes > 0
    })
    .await;
    assert_still_serving(&fx).await;
    let (code, bytes) = tokio::time::timeout(DEADLINE, call).await.unwrap().unwrap();
    assert_eq!(code, 504);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    let status = Status::from_reply_body(&aligned).unwrap();
    assert_eq!(status.code(), ErrorCode::Timeout, "{status}");
    wait_for(&fx.server, "the body to be freed", |s| {
        s.bodies_timed_out == 1 && s.buffered_bytes == 0
    })
    .await;
}

#[tokio::test]
async fn bodies_past_the_connection_budget_are_refused() {
    let fx = start(
        Server::builder()
            .max_body_size(64 << 10)
            .max_connection_buffer(128 << 10)
            .max_server_buffer(256 << 10),
    )
    .await;
    let (mut send, _pings, _driver) = h2_connect(fx.addr(), &h2::client::Builder::new()).await;
    // Each body announces about 60 KiB, which the server reserves (and charges) at once;
    // none is sent yet.
    let echo = archive(&Echo {
        data: vec![1; 60 << 10],
    });
    let len = echo.len();
    let open_body = |send: &mut h2::client::SendRequest<Bytes>| {
        let mut request = post(fx.addr(), "/echo/echo");
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.into());
        send.send_request(request, false).unwrap()
    };
    let mut open = Vec::new();
    for held in 1..=2 {
        open.push(open_body(&mut send));
        wait_for(&fx.server, "the body to be reserved", |s| {
            s.buffered_bytes == held * len as u64
        })
        .await;
    }
    // A third would take the connection past 128 KiB.
    let (response, _body) = open_body(&mut send);
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let status = read_status(&mut response.into_body()).await;
    assert_eq!(status.code(), ErrorCode::ResourceExhausted, "{status}");
    assert!(status.message().contains("this connection"), "{status}");
    let stats = fx.server.statistics();
    assert_eq!(
        (stats.bodies_over_budget, stats.buffered_bytes),
        (1, 2 * len as u64)
    );
    // Another connection has its own budget.
    assert_still_serving(&fx).await;
    // Sending one of the held bodies answers it and gives its bytes back.
    let (response, mut body) = open.pop().unwrap();
    body.send_data(echo.clone(), true).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    wait_for(&fx.server, "the bytes to be given back", |s| {
        s.buffered_bytes == len as u64
    })
    .await;
    // And a reset body gives its bytes back too.
    drop(open);
    wait_for(&fx.server, "the reset body to be freed", |s| {
        s.buffered_bytes == 0
    })
    .await;
}

#[tokio::test]
async fn a_zero_window_reader_pins_each_reply_once_until_it_stalls_out() {
    const REPLIES: usize = 4;
    let fx = start(Server::builder().idle_timeout(Duration::from_millis(500))).await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut send, _pings, _driver) = h2_connect(fx.addr(), &builder).await;
    let request = archive(&Echo {
        data: vec![5; 1 << 20],
    });
    let mut responses = Vec::new();
    for _ in 0..REPLIES {
        let (response, mut body) = send
            .send_request(post(fx.addr(), "/echo/echo"), false)
            .unwrap();
        body.send_data(request.clone(), true).unwrap();
        responses.push((response, body));
    }
    // The replies wait for a window that never opens. What the server holds for them is
    // each reply once; the requests are gone.
    let reply_len = request.len() as u64;
    wait_for(&fx.server, "the replies to queue", |s| {
        s.reply_bytes_queued == REPLIES as u64 * reply_len
    })
    .await;
    let stats = fx.server.statistics();
    assert_eq!(stats.buffered_bytes, 0, "{stats:?}");
    assert_still_serving(&fx).await;
    // Then they are dropped, their streams reset.
    wait_for(&fx.server, "the replies to stall out", |s| {
        s.replies_stalled == REPLIES as u64 && s.reply_bytes_queued == 0
    })
    .await;
    for (response, _) in responses {
        let response = tokio::time::timeout(DEADLINE, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.into_body();
        let end = tokio::time::timeout(DEADLINE, body.data()).await.unwrap();
        assert!(matches!(end, Some(Err(_))), "the stream is reset");
    }
}

/// A reply the peer's window has no room for is never handed to h2 beyond that room: not the
/// tail of a large reply (one byte short of the window), not a small reply (window 0). Before,
/// h2 held those bytes with the stream open for as long as the connection lived.
#[tokio::test]
async fn replies_a_shut_window_holds_back_stall_out_whatever_their_size() {
    let fx = start(Server::builder().idle_timeout(Duration::from_millis(300))).await;
    for (len, window) in [(1usize << 20, None), (100 << 10, Some(0))] {
        let request = archive(&Echo { data: vec![5; len] });
        let mut builder = h2::client::Builder::new();
        let window = window.unwrap_or(request.len() as u32 - 1);
        builder
            .initial_window_size(window)
            .initial_connection_window_size(4 * request.len() as u32);
        let (mut send, _pings, _driver) = h2_connect(fx.addr(), &builder).await;
        let stalled_before = fx.server.statistics().replies_stalled;
        let (response, mut body) = send
            .send_request(post(fx.addr(), "/echo/echo"), false)
            .unwrap();
        body.send_data(request, true).unwrap();
        let response = tokio::time::timeout(DEADLINE, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        // Never read: the reply stalls out, its stream reset.
        wait_for(&fx.server, "the reply to stall out", |s| {
            s.replies_stalled == stalled_before + 1 && s.reply_bytes_queued == 0
        })
        .await;
    }
    assert_still_serving(&fx).await;
}

/// Sends bodies announcing 64 MiB (the default largest body) on 500 streams and never the
/// bytes. Run in a child process whose address space is limited (`ulimit -v`), so a server
/// that reserved the announced size would fail to allocate and abort.
#[tokio::test]
async fn an_announced_length_reserves_little_under_an_address_space_limit() {
    const CHILD: &str = "DATACAKE_RPC_TEST_ADDRESS_SPACE_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let name = "limits::an_announced_length_reserves_little_under_an_address_space_limit";
        // 4 GiB: far above what the test needs (threads' stacks and allocator arenas), far
        // below 500 x 64 MiB.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -v 4194304 && exec "$0" --exact "$1" --test-threads=1"#)
            .arg(exe)
            .arg(name)
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(status.success(), "the child failed: {status}");
        return;
    }
    const STREAMS: u64 = 500;
    let fx = Fixture::start().await;
    let (mut send, _pings, _driver) = h2_connect(fx.addr(), &h2::client::Builder::new()).await;
    let mut open = Vec::new();
    for _ in 0..STREAMS {
        let mut request = post(fx.addr(), "/echo/echo");
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, (64usize << 20).into());
        send = send.ready().await.unwrap();
        open.push(send.send_request(request, false).unwrap());
    }
    // Each reserved a little, charged to the budget.
    wait_for(&fx.server, "every body to be waited for", |s| {
        s.buffered_bytes == STREAMS * (64 << 10)
    })
    .await;
    assert_still_serving(&fx).await;
    drop(open);
    wait_for(&fx.server, "the bodies to be freed", |s| {
        s.buffered_bytes == 0
    })
    .await;
    // Larger than the limit is still refused before a byte is read.
    let mut request = post(fx.addr(), "/echo/echo");
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, ((64usize << 20) + 1).into());
    let (response, _body) = send.send_request(request, false).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
}

/// A recursive message: `depth` levels of `Cons` around a `Nil`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[rkyv(
    serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source),
    deserialize_bounds(__D::Error: rkyv::rancor::Source),
    bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source))
)]
enum List {
    Nil,
    Cons(#[rkyv(omit_bounds)] Box<List>),
}

fn list(depth: usize) -> List {
    (0..depth).fold(List::Nil, |inner, _| List::Cons(Box::new(inner)))
}

/// The archive of `list(depth)`, written directly: archiving (or dropping) a very deep list
/// would itself recurse too deeply. A `Nil` first, then each `Cons` pointing 8 bytes back;
/// the root is last.
fn nested_archive(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; 8];
    for _ in 0..depth {
        bytes.extend_from_slice(&[1, 0, 0, 0]);
        bytes.extend_from_slice(&(-12i32).to_le_bytes());
    }
    bytes
}

/// Answers how deep a list is.
struct Nest;

impl RpcService for Nest {
    fn service_name() -> &'static str {
        "nest"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<List>();
    }
}

#[async_trait]
impl Handler<List> for Nest {
    type Reply = u64;

    fn path() -> &'static str {
        "depth"
    }

    async fn on_message(&self, request: Request<List>) -> Result<u64, Status> {
        let mut node: &ArchivedList = &request;
        let mut depth = 0;
        while let ArchivedList::Cons(next) = node {
            depth += 1;
            node = next.get();
        }
        Ok(depth)
    }
}

#[tokio::test]
async fn a_deeply_nested_message_is_an_invalid_payload() {
    // The hand-written archive is what rkyv writes.
    assert_eq!(&archive(&list(3))[..], &nested_archive(3)[..]);

    let fx = Fixture::start().await;
    fx.server.add_service(Nest);
    let deep = nested_archive(50_000);
    let (mut send, _pings, _driver) = h2_connect(fx.addr(), &h2::client::Builder::new()).await;
    let (response, mut body) = send
        .send_request(post(fx.addr(), "/nest/depth"), false)
        .unwrap();
    body.send_data(Bytes::from(deep.clone()), true).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let status = read_status(&mut response.into_body()).await;
    assert_eq!(status.code(), ErrorCode::InvalidPayload, "{status}");
    assert!(status.message().contains("nested"), "{status}");
    assert_eq!(fx.server.statistics().payloads_too_deep, 1);

    // Under the limit it works.
    let client = fx.client::<Nest>();
    let depth = client.send(&list(100)).await.unwrap();
    assert_eq!(depth.to_native(), 100);
    assert_still_serving(&fx).await;

    // The client's side refuses it the same way.
    let err = datacake_rpc::DataView::<List>::from_bytes(&deep).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidPayload, "{err}");
    assert_eq!(fx.server.statistics().payloads_too_deep, 1);
}

#[tokio::test]
async fn methods_other_than_post_get_405() {
    let fx = Fixture::start().await;
    let stream = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for method in [http::Method::HEAD, http::Method::GET, http::Method::PUT] {
        let request = http::Request::builder()
            .method(method.clone())
            .uri(format!("http://{}/echo/echo", fx.addr()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(response.headers()[http::header::ALLOW], "POST");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if method == http::Method::HEAD {
            assert!(bytes.is_empty(), "a HEAD reply has no body");
        } else {
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            let status = Status::from_reply_body(&aligned).unwrap();
            assert_eq!(
                status.code(),
                ErrorCode::InvalidPayload,
                "{method}: {status}"
            );
        }
    }
    assert_eq!(fx.server.statistics().methods_refused, 3);
    assert_still_serving(&fx).await;
}

#[tokio::test]
async fn contradictory_budgets_are_refused_at_listen() {
    let err = Server::builder()
        .max_connection_buffer(1 << 20)
        .max_server_buffer(1 << 10)
        .max_body_size(1 << 10)
        .listen(localhost())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<datacake_rpc::SettingsError>());
    assert!(
        matches!(
            inner,
            Some(datacake_rpc::SettingsError::ServerBufferBelowConnectionBuffer { .. })
        ),
        "{err}"
    );
}
