//! The `rpc` suite's third system: the same echo as a gRPC unary call on tonic (hyper's
//! HTTP/2 underneath), shared with `examples/echo_probe.rs` like [`crate::echo`].
//!
//! The message is a prost type written by hand (what `prost-build` would generate for
//! `message Echo { bytes data = 1; }`), and the service is the routing that tonic's
//! generated server code does for one method, so the build needs no `protoc`. Both ends use
//! tonic's defaults apart from TCP_NODELAY (which the other two systems set as well); the
//! server and the client run on the suite's two single-threaded runtimes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;
use tonic_prost::ProstCodec;

use crate::echo::PAYLOAD;

/// The echoed message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoMessage {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) data: bytes::Bytes,
}

/// The method's path, as `package bench; service Echo { rpc Echo(Echo) returns (Echo); }`
/// names it.
const PATH: &str = "/bench.Echo/Echo";

/// The echo's handler.
#[derive(Clone, Copy)]
struct EchoMethod;

impl tonic::server::UnaryService<EchoMessage> for EchoMethod {
    type Response = EchoMessage;
    type Future = std::future::Ready<Result<tonic::Response<EchoMessage>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

/// The service: routes the one method, answers anything else with gRPC `UNIMPLEMENTED`.
#[derive(Clone, Copy)]
struct EchoServer;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != PATH {
            let status = tonic::Status::unimplemented(format!("no method {}", request.uri()));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoMessage, EchoMessage>::default());
            Ok(grpc.unary(EchoMethod, request).await)
        })
    }
}

/// A tonic echo server (spawned on the current runtime) and a client of it.
pub(crate) struct GrpcEcho {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl GrpcEcho {
    /// Listens on a free loopback port (in the server side's runtime).
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(EchoServer, incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "tonic echo server failed");
            }
        });
        Ok(Self { addr, stop, server })
    }

    /// Stops the server and waits for it.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// A client on one tonic `Channel` (one HTTP/2 connection; clones share it). Connect inside
/// the client side's runtime: the channel's tasks run where it is made.
pub(crate) type GrpcClient = tonic::client::Grpc<tonic::transport::Channel>;

pub(crate) async fn grpc_connect(addr: SocketAddr) -> anyhow::Result<GrpcClient> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(tonic::client::Grpc::new(channel))
}

/// One echo of [`PAYLOAD`] bytes.
pub(crate) async fn grpc_call(mut client: GrpcClient) -> anyhow::Result<GrpcClient> {
    let message = EchoMessage {
        data: bytes::Bytes::from(vec![7; PAYLOAD]),
    };
    client.ready().await?;
    let reply = client
        .unary::<_, EchoMessage, _>(
            tonic::Request::new(message),
            http::uri::PathAndQuery::from_static(PATH),
            ProstCodec::default(),
        )
        .await?;
    anyhow::ensure!(reply.get_ref().data.len() == PAYLOAD, "echo differs");
    Ok(client)
}

/// `calls` sequential calls through `client`, timed one by one.
pub(crate) async fn grpc_sequential(
    mut client: GrpcClient,
    calls: usize,
) -> anyhow::Result<(GrpcClient, Vec<Duration>)> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        client = grpc_call(client).await?;
        samples.push(start.elapsed());
    }
    Ok((client, samples))
}
