//! Bad input on both sides: random bytes, truncated archives, archives of the wrong type and
//! oversized bodies give a clear `Status`, never a panic; a panicking handler gives `Internal`
//! without the panic's text.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use datacake_rpc::{
    async_trait, Body, ErrorCode, Handler, Request, RpcClient, RpcService, Server, ServiceRegistry,
    Status,
};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::fixtures::*;

/// Posts `body` to `path` with a plain hyper HTTP/2 client; returns the HTTP status and the
/// decoded `Status` of an error reply (or `None` for a success).
async fn raw_call<B>(addr: SocketAddr, path: &str, body: B) -> (u16, Option<Status>)
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let code = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    if code == 200 {
        return (code, None);
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bytes);
    let status = Status::from_reply_body(&aligned).expect("error replies carry an archived Status");
    (code, Some(status))
}

async fn raw_bytes(addr: SocketAddr, path: &str, bytes: Vec<u8>) -> (u16, Option<Status>) {
    raw_call(addr, path, Full::new(Bytes::from(bytes))).await
}

fn archive<T: datacake_rpc::Message>(value: &T) -> Vec<u8> {
    datacake_rpc::DataView::from_message(value)
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn assert_invalid(outcome: (u16, Option<Status>), what: &str) {
    let (code, status) = outcome;
    let status = status.unwrap_or_else(|| panic!("{what}: accepted with http {code}"));
    assert_eq!(status.code(), ErrorCode::InvalidPayload, "{what}: {status}");
    assert_eq!(code, 400, "{what}");
}

#[tokio::test]
async fn raw_client_control_a_valid_archive_is_accepted() {
    let fx = Fixture::start().await;
    let outcome = raw_bytes(
        fx.addr(),
        "/echo/echo",
        archive(&Echo {
            data: vec![1, 2, 3],
        }),
    )
    .await;
    assert_eq!(outcome, (200, None));
}

#[tokio::test]
async fn random_bytes_are_an_invalid_payload() {
    let fx = Fixture::start().await;
    for seed in 1..=40u64 {
        let len = (seed as usize * 37) % 300;
        let bytes = random_bytes(seed, len);
        assert_invalid(
            raw_bytes(fx.addr(), "/echo/echo", bytes).await,
            &format!("seed {seed}"),
        );
    }
}

#[tokio::test]
async fn truncated_archives_are_an_invalid_payload() {
    let fx = Fixture::start().await;
    let full = archive(&Echo {
        data: vec![0xab; 64],
    });
    for len in 0..full.len() {
        let outcome = raw_bytes(fx.addr(), "/echo/echo", full[..len].to_vec()).await;
        assert_invalid(outcome, &format!("prefix of {len}/{} bytes", full.len()));
    }
}

#[tokio::test]
async fn a_valid_archive_of_the_wrong_type_is_an_invalid_payload() {
    let fx = Fixture::start().await;
    let wrong = archive(&Increment { by: u64::MAX });
    assert_invalid(
        raw_bytes(fx.addr(), "/echo/echo", wrong).await,
        "Increment as Echo",
    );
    let wrong = archive(&Stream {
        chunks: u32::MAX,
        chunk_size: 7,
    });
    assert_invalid(
        raw_bytes(fx.addr(), "/echo/echo", wrong).await,
        "Stream as Echo",
    );
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let server = Server::builder()
        .max_body_size(1024)
        .listen(localhost())
        .await
        .unwrap();
    let fx = Fixture::with_server(server);

    // Large enough to be announced up front (content-length), and small enough not to be.
    for size in [256 << 10, 4096] {
        let err = fx
            .client::<EchoService>()
            .send(&Echo {
                data: vec![0; size],
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::PayloadTooLarge,
            "{size} bytes: {err}"
        );
    }

    // Not announced: counted while collecting.
    let chunks = (0..8).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; 512]))));
    let body = StreamBody::new(futures::stream::iter(chunks));
    let (code, status) = raw_call(fx.addr(), "/echo/echo", body).await;
    assert_eq!(code, 413);
    assert_eq!(status.unwrap().code(), ErrorCode::PayloadTooLarge);

    // Within the limit still works.
    let reply = fx
        .client::<EchoService>()
        .send(&Echo { data: vec![9; 512] })
        .await
        .unwrap();
    assert_eq!(reply.data.len(), 512);
}

#[tokio::test]
async fn a_panicking_handler_gives_internal_and_the_server_keeps_serving() {
    let fx = Fixture::start().await;
    let err = fx.client::<MiscService>().send(&Panic).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
    // What the panic said stays in the server's log: it may hold anything (paths, data).
    assert!(!err.message().contains("exploded on purpose"), "{err}");
    assert!(err.message().contains("panicked"), "{err}");
    let reply = fx
        .client::<EchoService>()
        .send(&Echo { data: vec![1] })
        .await
        .unwrap();
    assert_eq!(reply.data.as_slice(), &[1]);
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
enum Lie {
    RandomBytes,
    Truncated,
    WrongType,
    TooLargeAnnounced,
    TooLargeStreamed,
}

/// Replies to `Lie` with a raw body that is not what the client expects.
struct Liar;

impl RpcService for Liar {
    fn service_name() -> &'static str {
        "liar"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Lie>();
    }
}

#[async_trait]
impl Handler<Lie> for Liar {
    type Reply = Body;

    fn path() -> &'static str {
        "lie"
    }

    async fn on_message(&self, request: Request<Lie>) -> Result<Body, Status> {
        let lie = request.deserialize_view()?;
        Ok(match lie {
            Lie::RandomBytes => Body::from(random_bytes(7, 100)),
            Lie::Truncated => {
                let full = archive(&Echo {
                    data: vec![0xab; 64],
                });
                Body::from(full[..full.len() - 3].to_vec())
            }
            Lie::WrongType => Body::from(archive(&Increment { by: u64::MAX })),
            Lie::TooLargeAnnounced => Body::from(archive(&Echo {
                data: vec![0; 4096],
            })),
            Lie::TooLargeStreamed => {
                let chunks = (0..8).map(|_| Ok::<_, Status>(Bytes::from(vec![0u8; 512])));
                Body::from_stream(futures::stream::iter(chunks))
            }
        })
    }
}

/// The client's view of the liar: it expects an `Echo` reply.
struct TrustingLiar;

impl RpcService for TrustingLiar {
    fn service_name() -> &'static str {
        "liar"
    }

    fn register_handlers(_registry: &mut ServiceRegistry<Self>) {}
}

#[async_trait]
impl Handler<Lie> for TrustingLiar {
    type Reply = Echo;

    fn path() -> &'static str {
        "lie"
    }

    async fn on_message(&self, _request: Request<Lie>) -> Result<Echo, Status> {
        unreachable!("only used as a client")
    }
}

#[tokio::test]
async fn bad_replies_are_refused_by_the_client() {
    let fx = Fixture::start().await;
    fx.server.add_service(Liar);
    let mut client = RpcClient::<TrustingLiar>::new(fx.channel.clone());
    client.set_max_reply_size(1024);
    for (lie, expected) in [
        (Lie::RandomBytes, ErrorCode::InvalidPayload),
        (Lie::Truncated, ErrorCode::InvalidPayload),
        (Lie::WrongType, ErrorCode::InvalidPayload),
        (Lie::TooLargeAnnounced, ErrorCode::PayloadTooLarge),
        (Lie::TooLargeStreamed, ErrorCode::PayloadTooLarge),
    ] {
        let err = client.send(&lie).await.unwrap_err();
        assert_eq!(err.code(), expected, "{lie:?}: {err}");
    }
}
