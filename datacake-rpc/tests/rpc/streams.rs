//! How a channel uses HTTP/2 streams: a connection is retired before its stream ids run
//! out, a stream the server refused unprocessed is sent again, pushed streams are refused,
//! and an upload whose caller gave up is reset (so the server's handler stops).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use datacake_rpc::{
    async_trait, Body, Channel, ErrorCode, Handler, Request, RpcClient, RpcService, Server,
    ServiceRegistry, Status,
};
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::fixtures::*;

/// Answers with the port its caller's connection came from.
struct WhoService;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct Who;

impl RpcService for WhoService {
    fn service_name() -> &'static str {
        "who"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Who>();
    }
}

#[async_trait]
impl Handler<Who> for WhoService {
    type Reply = u16;

    fn path() -> &'static str {
        "port"
    }

    async fn on_message(&self, request: Request<Who>) -> Result<u16, Status> {
        Ok(request.remote_addr().port())
    }
}

#[tokio::test]
async fn a_connection_is_retired_once_it_opened_its_last_stream() {
    let server = Server::listen(localhost()).await.unwrap();
    server.add_service(WhoService);
    let channel = Channel::builder()
        .streams_per_connection(2)
        .connect(server.local_addr());
    let client = RpcClient::<WhoService>::new(channel);
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.push(client.send(&Who).await.unwrap());
    }
    // Two calls per connection, then a new one: the calls never meet an exhausted one.
    assert_eq!(ports[0], ports[1], "{ports:?}");
    assert_ne!(ports[1], ports[2], "{ports:?}");
    assert_eq!(ports[2], ports[3], "{ports:?}");
    assert_ne!(ports[3], ports[4], "{ports:?}");
    // A retired connection closes once its calls are done: only the last one stays open.
    wait_for(&server, "retired connections to close", |s| {
        s.connections_open == 1
    })
    .await;
}

/// An HTTP/2 server of its own (h2 directly): `answer` gets each request, in order, with the
/// request body already read, and the number of requests before it.
async fn raw_server<F>(mut answer: F) -> SocketAddr
where
    F: FnMut(usize, Bytes, h2::server::SendResponse<Bytes>) + Send + 'static,
{
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(stream).await.unwrap();
        let mut seen = 0;
        while let Some(Ok((request, respond))) = connection.accept().await {
            let mut body = request.into_body();
            let mut bytes = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            answer(seen, Bytes::from(bytes), respond);
            seen += 1;
        }
    });
    addr
}

/// Sends `body` back with 200 (an `Echo` request's archive is also its reply's).
fn echo_back(body: Bytes, mut respond: h2::server::SendResponse<Bytes>) {
    let mut stream = respond
        .send_response(http::Response::new(()), false)
        .unwrap();
    stream.send_data(body, true).unwrap();
}

#[tokio::test]
async fn a_stream_refused_unprocessed_is_sent_again() {
    let addr = raw_server(|seen, body, mut respond| {
        if seen == 0 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        } else {
            echo_back(body, respond);
        }
    })
    .await;
    let client = RpcClient::<EchoService>::new(Channel::connect(addr));
    let reply = tokio::time::timeout(DEADLINE, client.send(&Echo { data: vec![3; 8] }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.data.as_slice(), &[3; 8]);
}

#[tokio::test]
async fn pushed_streams_are_refused() {
    let (pushed_tx, pushed) = tokio::sync::oneshot::channel();
    let mut pushed_tx = Some(pushed_tx);
    let addr = raw_server(move |_, body, mut respond| {
        let push = http::Request::get("http://localhost/pushed")
            .body(())
            .unwrap();
        let result = respond.push_request(push).map(|_| ());
        if let Some(tx) = pushed_tx.take() {
            let _ = tx.send(result.is_ok());
        }
        echo_back(body, respond);
    })
    .await;
    let client = RpcClient::<EchoService>::new(Channel::connect(addr));
    let reply = tokio::time::timeout(DEADLINE, client.send(&Echo { data: vec![1] }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.data.as_slice(), &[1]);
    assert!(
        !pushed.await.unwrap(),
        "the channel must refuse pushed streams"
    );
}

#[tokio::test]
async fn an_upload_whose_caller_gave_up_is_reset_and_frees_its_stream() {
    let fx = Fixture::with_server(
        Server::builder()
            .max_concurrent_streams(2)
            .listen(localhost())
            .await
            .unwrap(),
    );
    let mut uploader = fx.client::<MiscService>();
    uploader.set_timeout(Duration::from_millis(200));
    // Each upload sends a byte and then stalls; its caller gives up. Before, the stream
    // stayed open (its upload task held it) with the handler waiting for the rest: two of
    // them took every stream the server allows.
    for _ in 0..2 {
        let stalled = futures::stream::iter([Ok::<_, Status>(Bytes::from_static(b"x"))])
            .chain(futures::stream::pending());
        let error = uploader
            .send_owned(Body::from_stream(stalled))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Timeout, "{error:?}");
    }
    let mut echo = fx.client::<EchoService>();
    echo.set_timeout(DEADLINE);
    let reply = echo.send(&Echo { data: vec![9] }).await.unwrap();
    assert_eq!(reply.data.as_slice(), &[9]);
}
