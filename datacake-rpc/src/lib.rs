//! Zero-copy, validated [rkyv] RPC over HTTP/2, with services added and removed at runtime.
//!
//! # Concepts
//! - A **message** is any type deriving `rkyv::Archive`, `Serialize` and `Deserialize`
//!   ([`Message`] is implemented for it). It travels as an rkyv archive; the receiver checks
//!   the archive with bytecheck **once**, then reads it in place through a [`DataView`].
//! - A **service** ([`RpcService`]) is a named group of **handlers** ([`Handler<Msg>`]), one
//!   per message type, reachable at `/{service}/{handler path}`.
//! - A [`Server`] listens on one address; services are added with [`Server::add_service`] and
//!   removed with [`Server::remove_service`] while it runs.
//! - A [`Channel`] is a lazily opened, shared HTTP/2 connection to one server (TCP_NODELAY,
//!   keep-alive, reconnects after failures); an [`RpcClient<Svc>`] makes typed calls over it.
//! - Every failure is a [`Status`]: a handler's own error reaches the client unchanged; bad
//!   input gives [`ErrorCode::InvalidPayload`] or [`ErrorCode::PayloadTooLarge`] (or
//!   [`ErrorCode::ResourceExhausted`] when the server's buffers are full); an unknown
//!   path [`ErrorCode::Unavailable`]; a panicking handler [`ErrorCode::Internal`]; network
//!   trouble [`ErrorCode::Connection`] or [`ErrorCode::Timeout`].
//! - [`Body`] skips rkyv for streamed requests or replies.
//! - A server **limits** everything it takes from the network, each limit a
//!   [`ServerBuilder`] setting with a `DEFAULT_*` constant, and counts what it refuses
//!   ([`Server::statistics`]): connections ([`DEFAULT_MAX_CONNECTIONS`]; a new one past it
//!   closes the oldest still handshaking, else it is closed at once; at most
//!   [`MAX_HANDSHAKING`] handshake at once), streams per connection ([`DEFAULT_MAX_CONCURRENT_STREAMS`]) and header list size
//!   ([`DEFAULT_MAX_HEADER_LIST_SIZE`]), both advertised in the HTTP/2 settings; idle
//!   connections are closed with a GOAWAY ([`DEFAULT_IDLE_TIMEOUT`], a [`Channel`] reconnects
//!   on its next call); a message body must arrive within [`DEFAULT_BODY_TIMEOUT`]
//!   ([`ErrorCode::Timeout`]); bodies are at most [`DEFAULT_MAX_BODY_SIZE`] and the bytes
//!   buffered per connection and per server have budgets ([`DEFAULT_MAX_CONNECTION_BUFFER`],
//!   [`DEFAULT_MAX_SERVER_BUFFER`], [`ErrorCode::ResourceExhausted`] past them), a
//!   Content-Length reserves at most 64 KiB before bytes arrive; archives nest at most
//!   [`DEFAULT_MAX_DEPTH`] subtrees (on the client too; [`ErrorCode::InvalidPayload`]
//!   rather than a stack overflow); large replies leave as the peer's flow-control window
//!   allows, and are dropped if it stays shut for the idle timeout; a method other than
//!   `POST` gets `405`.
//! - On the wire: HTTP/2 with prior knowledge (h2c), or over TLS. A call is a `POST /{service}/{path}`
//!   whose body is the request archive; the reply is `200` with the reply archive, or an
//!   error status with an archived [`Status`]. Headers travel both ways
//!   ([`RequestContext`], [`Request::set_reply_header`], [`Response::headers`]). Both sides
//!   speak HTTP/2 through the crate's own implementation (plain HTTP/2 on the wire, checked
//!   against h2 and hyper in the tests): a small call costs one write each way, and a handler
//!   that completes at once is answered from the connection's task without spawning.
//! - [`TlsConfig`]: mutual TLS (rustls) for a [`Server`] ([`ServerBuilder::tls`]) and its
//!   [`Channel`]s ([`ChannelBuilder::tls`]): both ends show a certificate from one CA, ALPN
//!   `h2`, and a handler reads the caller's verified certificate with [`Request::peer`]
//!   ([`PeerIdentity`]). Without it, HTTP/2 goes in plaintext: for tests and trusted
//!   networks only.
//! - **Metrics** go through the [`metrics`](https://docs.rs/metrics) facade, so the
//!   application picks the exporter: `datacake_rpc_server_calls_total`,
//!   `datacake_rpc_server_errors_total` and `datacake_rpc_server_call_duration_seconds`,
//!   labelled by `service` (a registered service's name, or `unknown` for a path no service
//!   serves) and, for errors, `code`. The README's "Metrics" lists them.
//! - With the `simulation` feature, [`Server::listen_simulated`] and
//!   [`Channel::connect_simulated`] run on turmoil's simulated network, next to the real one.
//!
//! # Example
//! ```
//! use datacake_rpc::{Channel, Handler, Request, RpcClient, RpcService, Server, ServiceRegistry, Status};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
//! pub struct Add {
//!     pub a: u64,
//!     pub b: u64,
//! }
//!
//! pub struct Calculator;
//!
//! impl RpcService for Calculator {
//!     fn service_name() -> &'static str {
//!         "calculator"
//!     }
//!
//!     fn register_handlers(registry: &mut ServiceRegistry<Self>) {
//!         registry.add_handler::<Add>();
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl Handler<Add> for Calculator {
//!     type Reply = u64;
//!
//!     fn path() -> &'static str {
//!         "add"
//!     }
//!
//!     async fn on_message(&self, request: Request<Add>) -> Result<u64, Status> {
//!         // Fields are read straight from the validated archive.
//!         Ok(request.a.to_native() + request.b.to_native())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::listen("127.0.0.1:0".parse()?).await?;
//! server.add_service(Calculator);
//!
//! let client = RpcClient::<Calculator>::new(Channel::connect(server.local_addr()));
//! let sum = client.send(&Add { a: 2, b: 3 }).await?;
//! assert_eq!(sum.to_native(), 5);
//!
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod body;
mod channel;
mod client;
mod connection;
mod handler;
mod headers;
mod http2;
mod limits;
mod metrics;
mod net;
mod payload;
mod request;
mod server;
mod status;
mod tls;
mod validate;
mod view;

pub use body::Body;
pub use channel::{Channel, ChannelBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE};
pub use client::{Response, RpcClient, DEFAULT_MAX_REPLY_SIZE};
pub use handler::{Handler, RpcService, ServiceRegistry};
pub use headers::Headers;
pub use limits::ServerStatistics;
pub use payload::{Message, Payload, DEFAULT_MAX_DEPTH};
pub use request::{Request, RequestContext};
pub use server::{
    Server, ServerBuilder, SettingsError, DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTION_BUFFER, DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_SERVER_BUFFER,
    DEFAULT_SHUTDOWN_GRACE, MAX_HANDSHAKING,
};
pub use status::{error_chain, ErrorCode, Status};
pub use tls::{PeerIdentity, TlsConfig, TlsError};
pub use view::DataView;

// Re-exported so users name the same versions the crate uses.
pub use async_trait::async_trait;
pub use rkyv;
pub use rustls::pki_types;
