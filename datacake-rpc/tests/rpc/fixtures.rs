//! Services, messages and helpers shared by the tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use datacake_rpc::{
    async_trait, Body, Channel, Handler, Request, RpcClient, RpcService, Server, ServerStatistics,
    ServiceRegistry, Status,
};
use futures::StreamExt as _;
use tokio::sync::mpsc;

/// How long any test waits for something that should happen promptly.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
#[rkyv(compare(PartialEq))]
pub(crate) struct Echo {
    pub(crate) data: Vec<u8>,
}

/// Echoes its message back.
pub(crate) struct EchoService;

impl RpcService for EchoService {
    fn service_name() -> &'static str {
        "echo"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Echo>();
    }
}

#[async_trait]
impl Handler<Echo> for EchoService {
    type Reply = Echo;

    fn path() -> &'static str {
        "echo"
    }

    async fn on_message(&self, request: Request<Echo>) -> Result<Echo, Status> {
        request.deserialize_view()
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Increment {
    pub(crate) by: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Get;

/// Two handlers sharing one counter.
#[derive(Default)]
pub(crate) struct CounterService {
    pub(crate) count: AtomicU64,
}

impl RpcService for CounterService {
    fn service_name() -> &'static str {
        "counter"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Increment>();
        registry.add_handler::<Get>();
    }
}

#[async_trait]
impl Handler<Increment> for CounterService {
    type Reply = u64;

    fn path() -> &'static str {
        "increment"
    }

    async fn on_message(&self, request: Request<Increment>) -> Result<u64, Status> {
        Ok(self
            .count
            .fetch_add(request.by.to_native(), Ordering::SeqCst)
            + request.by.to_native())
    }
}

#[async_trait]
impl Handler<Get> for CounterService {
    type Reply = u64;

    fn path() -> &'static str {
        "get"
    }

    async fn on_message(&self, _request: Request<Get>) -> Result<u64, Status> {
        Ok(self.count.load(Ordering::SeqCst))
    }
}

/// Two services handling the same message type, each answering with its own name.
macro_rules! named_service {
    ($ty:ident, $name:literal) => {
        pub(crate) struct $ty;

        impl RpcService for $ty {
            fn service_name() -> &'static str {
                $name
            }

            fn register_handlers(registry: &mut ServiceRegistry<Self>) {
                registry.add_handler::<Echo>();
            }
        }

        #[async_trait]
        impl Handler<Echo> for $ty {
            type Reply = String;

            fn path() -> &'static str {
                "echo"
            }

            async fn on_message(&self, request: Request<Echo>) -> Result<String, Status> {
                Ok(format!(
                    "{}:{}",
                    $name,
                    String::from_utf8_lossy(&request.data)
                ))
            }
        }
    };
}

named_service!(ServiceA, "service-a");
named_service!(ServiceB, "service-b");

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Fail {
    pub(crate) code: u16,
    pub(crate) message: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Panic;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Hang;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Stream {
    pub(crate) chunks: u32,
    pub(crate) chunk_size: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Headered;

/// Handlers that misbehave or do unusual things: fail, panic, hang, stream, use headers.
pub(crate) struct MiscService {
    /// Told when a `Hang` call has entered its handler.
    pub(crate) entered: mpsc::UnboundedSender<()>,
}

impl RpcService for MiscService {
    fn service_name() -> &'static str {
        "misc"
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Fail>();
        registry.add_handler::<Panic>();
        registry.add_handler::<Hang>();
        registry.add_handler::<Stream>();
        registry.add_handler::<Headered>();
        registry.add_handler::<Body>();
    }
}

#[async_trait]
impl Handler<Fail> for MiscService {
    type Reply = ();

    fn path() -> &'static str {
        "fail"
    }

    async fn on_message(&self, request: Request<Fail>) -> Result<(), Status> {
        Err(Status::custom(
            request.code.to_native(),
            request.message.as_str(),
        ))
    }
}

#[async_trait]
impl Handler<Panic> for MiscService {
    type Reply = ();

    fn path() -> &'static str {
        "panic"
    }

    async fn on_message(&self, _request: Request<Panic>) -> Result<(), Status> {
        panic!("handler exploded on purpose");
    }
}

#[async_trait]
impl Handler<Hang> for MiscService {
    type Reply = ();

    fn path() -> &'static str {
        "hang"
    }

    async fn on_message(&self, _request: Request<Hang>) -> Result<(), Status> {
        let _ = self.entered.send(());
        futures::future::pending::<()>().await;
        Ok(())
    }
}

#[async_trait]
impl Handler<Stream> for MiscService {
    type Reply = Body;

    fn path() -> &'static str {
        "stream"
    }

    async fn on_message(&self, request: Request<Stream>) -> Result<Body, Status> {
        let (chunks, size) = (request.chunks.to_native(), request.chunk_size.to_native());
        let stream = futures::stream::iter(0..chunks).then(move |i| async move {
            // Give the peer a chance to see chunks arrive separately.
            tokio::task::yield_now().await;
            Ok::<_, Status>(Bytes::from(vec![(i % 251) as u8; size as usize]))
        });
        Ok(Body::from_stream(stream))
    }
}

#[async_trait]
impl Handler<Headered> for MiscService {
    type Reply = ();

    fn path() -> &'static str {
        "headered"
    }

    async fn on_message(&self, request: Request<Headered>) -> Result<(), Status> {
        let asked = request
            .headers()
            .get("x-question")
            .unwrap_or("nothing")
            .to_string();
        request.set_reply_header("x-answer", &format!("you asked {asked}"))?;
        Ok(())
    }
}

#[async_trait]
impl Handler<Body> for MiscService {
    type Reply = u64;

    fn path() -> &'static str {
        "upload"
    }

    async fn on_message(&self, request: Request<Body>) -> Result<u64, Status> {
        let mut body = request.into_inner();
        let mut total = 0u64;
        while let Some(chunk) = body.next_chunk().await {
            total += chunk?.len() as u64;
        }
        Ok(total)
    }
}

/// A running server with every test service.
pub(crate) struct Fixture {
    pub(crate) server: Server,
    pub(crate) channel: Channel,
    pub(crate) entered: mpsc::UnboundedReceiver<()>,
}

impl Fixture {
    pub(crate) async fn start() -> Self {
        Self::with_server(Server::listen(localhost()).await.unwrap())
    }

    pub(crate) fn with_server(server: Server) -> Self {
        let (tx, entered) = mpsc::unbounded_channel();
        server.add_service(EchoService);
        server.add_service(CounterService::default());
        server.add_service(MiscService { entered: tx });
        let channel = Channel::connect(server.local_addr());
        Self {
            server,
            channel,
            entered,
        }
    }

    pub(crate) fn client<Svc: RpcService>(&self) -> RpcClient<Svc> {
        RpcClient::new(self.channel.clone())
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so failures replay.
pub(crate) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Polls the server's statistics until `done` holds, failing after [`DEADLINE`].
pub(crate) async fn wait_for(
    server: &Server,
    what: &str,
    done: impl Fn(&ServerStatistics) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stats = server.statistics();
        if done(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
