//! Suite `rpc`: datacake-rpc against a raw tokio TCP baseline on loopback.
//!
//! Both echo a 64-byte payload. The baseline uses length-prefixed frames; for N calls in
//! flight it opens N connections with one call outstanding each (TCP_NODELAY on both ends).
//! datacake-rpc multiplexes every call over one `Channel`.
//!
//! Topology (the same for both): the server side runs on its own single-threaded tokio
//! runtime (one OS thread), the client side on another, as if they were two processes; the
//! two meet only through loopback sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datacake_rpc::{
    async_trait, Channel, Handler, Request, RpcClient, RpcService, Server, ServiceRegistry, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::RunConfig;
use crate::report::{Latency, Measurement, SuiteReport};

const PAYLOAD: usize = 64;
/// What the throughput chart's x axis counts.
const X_LABEL: &str = "calls in flight";

/// The suite's sizes for one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Calls before the latency samples start.
    warmup_calls: usize,
    /// Latency samples.
    latency_calls: usize,
    /// How long each throughput cell runs.
    window: Duration,
}

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let sizes = Sizes {
        warmup_calls: cfg.pick(500, 20_000, 20_000),
        latency_calls: cfg.pick(2_000, 20_000, 100_000),
        window: cfg.pick(
            Duration::from_millis(200),
            Duration::from_secs(2),
            Duration::from_secs(3),
        ),
    };
    let in_flight =
        cfg.concurrency_or(&cfg.pick(vec![1, 16], vec![1, 64, 256], vec![1, 16, 64, 256, 1_024]));
    let server_side = Side::start("rpc-bench-server")?;
    let client_side = Side::start("rpc-bench-client")?;
    let mut measurements = Vec::new();
    let raw = server_side.handle.spawn(RawEcho::start()).await??;
    let rpc = server_side.handle.spawn(RpcEcho::start()).await??;

    cfg.progress.scenario("sequential latency, raw-tcp");
    let raw_latency = client_side
        .handle
        .spawn(raw_sequential_latency(raw.addr, sizes))
        .await??;
    cfg.progress.scenario("sequential latency, datacake-rpc");
    let rpc_latency = client_side
        .handle
        .spawn(rpc_sequential_latency(rpc.client.clone(), sizes))
        .await??;
    let scenario = format!("echo {PAYLOAD} B, sequential");
    measurements.push(Measurement::new(&scenario, "raw-tcp").with_latency(Some(raw_latency)));
    measurements.push(
        Measurement::new(&scenario, "datacake-rpc")
            .with_latency(Some(rpc_latency))
            .with_ratio(ratio(rpc_latency.p50, raw_latency.p50))
            .with_target("p50 <= 1.5x raw, p99.9 < 1 ms"),
    );

    for n in in_flight {
        cfg.progress
            .scenario(format!("throughput, {n} in flight, raw-tcp"));
        let raw_ops = client_side
            .handle
            .spawn(raw_throughput(raw.addr, n, sizes.window))
            .await??;
        cfg.progress
            .scenario(format!("throughput, {n} in flight, datacake-rpc"));
        let rpc_ops = client_side
            .handle
            .spawn(rpc_throughput(rpc.client.clone(), n, sizes.window))
            .await??;
        let scenario = format!("echo {PAYLOAD} B, {n} in flight");
        measurements.push(
            Measurement::new(&scenario, "raw-tcp")
                .with_ops_per_sec(raw_ops)
                .with_point("raw-tcp", X_LABEL, n as f64),
        );
        let mut ours = Measurement::new(&scenario, "datacake-rpc")
            .with_ops_per_sec(rpc_ops)
            .with_ratio(rpc_ops / raw_ops)
            .with_point("datacake-rpc", X_LABEL, n as f64);
        if n == 64 {
            ours = ours.with_target(">= 0.75x raw");
        }
        measurements.push(ours);
    }

    rpc.server.shutdown().await;
    raw.server.abort();
    drop(rpc);
    server_side.stop();
    client_side.stop();
    Ok(SuiteReport {
        suite: "rpc",
        measurements,
    })
}

/// One side (client or server): a single-threaded runtime on its own OS thread.
struct Side {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Side {
    fn start(name: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            stop,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn ratio(ours: Duration, baseline: Duration) -> f64 {
    ours.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
}

/// Runs `tasks` closed loops for the throughput window and returns calls per second.
///
/// Each loop warms up, then all start together at a barrier; `call` performs one call with
/// the loop's state and hands the state back.
async fn closed_loops<S, F, Fut>(tasks: Vec<S>, window: Duration, call: F) -> anyhow::Result<f64>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<S>> + Send,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks.len() + 1));
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|mut state: S| {
            let (barrier, call) = (barrier.clone(), call.clone());
            tokio::spawn(async move {
                for _ in 0..100 {
                    state = call(state).await?;
                }
                barrier.wait().await;
                let end = Instant::now() + window;
                let mut calls = 0u64;
                while Instant::now() < end {
                    state = call(state).await?;
                    calls += 1;
                }
                Ok::<_, anyhow::Error>(calls)
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut total = 0;
    for handle in handles {
        total += handle.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

// ---- raw TCP baseline -------------------------------------------------------------------

struct RawEcho {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl RawEcho {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(raw_serve(stream));
            }
        });
        Ok(Self { addr, server })
    }
}

async fn raw_throughput(
    addr: SocketAddr,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let mut conns = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        conns.push(RawConn::connect(addr).await?);
    }
    closed_loops(conns, window, |mut conn: RawConn| async move {
        conn.call(&[7u8; PAYLOAD]).await?;
        Ok(conn)
    })
    .await
}

async fn raw_sequential_latency(addr: SocketAddr, sizes: Sizes) -> anyhow::Result<Latency> {
    let mut conn = RawConn::connect(addr).await?;
    let payload = [7u8; PAYLOAD];
    for _ in 0..sizes.warmup_calls {
        conn.call(&payload).await?;
    }
    let mut samples = Vec::with_capacity(sizes.latency_calls);
    for _ in 0..sizes.latency_calls {
        let start = Instant::now();
        conn.call(&payload).await?;
        samples.push(start.elapsed());
    }
    Latency::from_samples(&mut samples).ok_or_else(|| anyhow::anyhow!("no samples"))
}

struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4 + PAYLOAD),
        })
    }

    async fn call(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.stream.write_all(&self.buf).await?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.stream.read_exact(&mut self.buf).await?;
        anyhow::ensure!(self.buf == payload, "echo differs");
        Ok(())
    }
}

async fn raw_serve(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(4 + PAYLOAD);
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_le_bytes(len) as usize;
        buf.clear();
        buf.extend_from_slice(&len);
        buf.resize(4 + n, 0);
        if stream.read_exact(&mut buf[4..]).await.is_err() {
            return;
        }
        if stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

// ---- datacake-rpc -----------------------------------------------------------------------

/// The echoed message.
#[derive(
    datacake_rpc::rkyv::Archive, datacake_rpc::rkyv::Serialize, datacake_rpc::rkyv::Deserialize,
)]
#[rkyv(crate = datacake_rpc::rkyv)]
struct Echo {
    data: Vec<u8>,
}

struct EchoService;

impl RpcService for EchoService {
    fn service_name() -> &'static str {
        "bench"
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
        Ok(Echo {
            data: request.data.to_vec(),
        })
    }
}

struct RpcEcho {
    server: Server,
    client: RpcClient<EchoService>,
}

impl RpcEcho {
    async fn start() -> anyhow::Result<Self> {
        let server = Server::listen("127.0.0.1:0".parse()?).await?;
        server.add_service(EchoService);
        let client = RpcClient::new(Channel::connect(server.local_addr()));
        Ok(Self { server, client })
    }
}

async fn rpc_throughput(
    client: RpcClient<EchoService>,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let callers = (0..in_flight).map(|_| client.clone()).collect();
    closed_loops(
        callers,
        window,
        |client: RpcClient<EchoService>| async move {
            let reply = client
                .send(&Echo {
                    data: vec![7; PAYLOAD],
                })
                .await?;
            anyhow::ensure!(reply.data.len() == PAYLOAD, "echo differs");
            drop(reply);
            Ok(client)
        },
    )
    .await
}

async fn rpc_sequential_latency(
    client: RpcClient<EchoService>,
    sizes: Sizes,
) -> anyhow::Result<Latency> {
    let msg = Echo {
        data: vec![7; PAYLOAD],
    };
    for _ in 0..sizes.warmup_calls {
        client.send(&msg).await?;
    }
    let mut samples = Vec::with_capacity(sizes.latency_calls);
    for _ in 0..sizes.latency_calls {
        let start = Instant::now();
        let reply = client.send(&msg).await?;
        samples.push(start.elapsed());
        anyhow::ensure!(reply.data.len() == PAYLOAD, "echo differs");
    }
    Latency::from_samples(&mut samples).ok_or_else(|| anyhow::anyhow!("no samples"))
}
