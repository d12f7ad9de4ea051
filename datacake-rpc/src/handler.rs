//! Services and their handlers: [`RpcService`], [`Handler`], [`ServiceRegistry`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::payload::ReadLimits;
use crate::{Body, Headers, Payload, PeerIdentity, Request, Status};

/// A named group of handlers, added to a [`Server`](crate::Server) at runtime.
///
/// Each handler is reachable at `/{service_name}/{handler path}`.
pub trait RpcService: Send + Sync + Sized + 'static {
    /// The service's name, the first segment of its handlers' paths.
    ///
    /// Required (datacake 0.x defaulted to `std::any::type_name::<Self>()`): the name is a
    /// wire identifier that every node of a cluster must agree on, and a type name is not
    /// one. The standard library does not promise it is stable across compiler versions or
    /// unique, it changes when the type moves to another module, and a generic type's name
    /// holds characters (`<`, `>`, spaces) a request path cannot carry.
    fn service_name() -> &'static str;

    /// Registers every handler the service offers with
    /// [`ServiceRegistry::add_handler`].
    fn register_handlers(registry: &mut ServiceRegistry<Self>);
}

/// Handles one message type `Msg` for a service.
///
/// The request has been validated before `on_message` runs; the reply (or the `Status`) is
/// sent back as is, so the handler's own error reaches the client unchanged.
///
/// A handler that finishes without waiting is run right on its connection's task (no task
/// is spawned for it), which keeps small calls fast; so keep synchronous work short and move
/// heavy computation to `tokio::task::spawn_blocking`. Handlers that wait run in a task of
/// their own and are dropped if the caller gives up (e.g. its deadline passes).
#[async_trait::async_trait]
pub trait Handler<Msg: Payload>: RpcService {
    /// What the handler replies with: a [`Message`](crate::Message) or a [`Body`].
    type Reply: Payload;

    /// The handler's path within the service, unique per service (e.g. the message's name).
    ///
    /// Required, for the reason given at [`RpcService::service_name`] (datacake 0.x
    /// defaulted to the message's type name).
    fn path() -> &'static str;

    /// Handles one call.
    async fn on_message(&self, request: Request<Msg>) -> Result<Self::Reply, Status>;
}

/// The parts of an incoming call a handler needs, before the body is decoded.
pub(crate) struct Call {
    pub(crate) body: Body,
    pub(crate) headers: Headers,
    pub(crate) remote_addr: SocketAddr,
    /// The caller's verified certificate, on a TLS connection.
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    pub(crate) limits: ReadLimits,
    pub(crate) reply_headers: Arc<Mutex<Headers>>,
}

/// A handler with its service and types erased.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(Call) -> BoxFuture<'static, Result<Body, Status>> + Send + Sync>;

/// Collects a service's handlers as it registers them.
pub struct ServiceRegistry<Svc> {
    service: Arc<Svc>,
    handlers: Vec<(&'static str, ErasedHandler)>,
}

impl<Svc: RpcService> ServiceRegistry<Svc> {
    pub(crate) fn new(service: Svc) -> Self {
        Self {
            service: Arc::new(service),
            handlers: Vec::new(),
        }
    }

    /// Routes calls carrying `Msg` to `Svc`'s [`Handler<Msg>`].
    pub fn add_handler<Msg>(&mut self)
    where
        Msg: Payload,
        Svc: Handler<Msg>,
    {
        let service = self.service.clone();
        let handler: ErasedHandler = Arc::new(move |call: Call| {
            let service = service.clone();
            Box::pin(async move {
                let view = Msg::from_body(call.body, call.limits).await?;
                let request = Request::<Msg>::new(
                    view,
                    call.remote_addr,
                    call.peer,
                    call.headers,
                    call.reply_headers,
                );
                let reply = service.on_message(request).await?;
                reply.into_body()
            })
        });
        self.handlers.push((<Svc as Handler<Msg>>::path(), handler));
    }

    pub(crate) fn into_handlers(self) -> Vec<(&'static str, ErasedHandler)> {
        self.handlers
    }
}

impl<Svc> fmt::Debug for ServiceRegistry<Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("service", &std::any::type_name::<Svc>())
            .field(
                "paths",
                &self.handlers.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            )
            .finish()
    }
}
