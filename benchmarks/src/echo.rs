//! The two echo systems the `rpc` suite compares, shared with `examples/echo_probe.rs` (which
//! includes this file by path, so the probe measures exactly what the suite does).
//!
//! Both echo a payload. The raw TCP baseline uses length-prefixed frames, one call outstanding
//! per connection (TCP_NODELAY on both ends); datacake-rpc multiplexes every call over one
//! `Channel`. Each side of a comparison runs on a [`Side`]: a single-threaded tokio runtime on
//! its own OS thread, as if client and server were two processes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datacake_rpc::{
    async_trait, Channel, Handler, Request, RpcClient, RpcService, Server, ServiceRegistry, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes echoed per call.
pub(crate) const PAYLOAD: usize = 64;

/// One side (client or server): a single-threaded runtime on its own OS thread.
pub(crate) struct Side {
    pub(crate) handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Side {
    pub(crate) fn start(name: &str) -> anyhow::Result<Self> {
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

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Runs `tasks` closed loops for `window` and returns calls per second, and the loops' states
/// for the next round.
///
/// Each loop warms up, then all start together at a barrier; `call` performs one call with
/// the loop's state and hands the state back.
pub(crate) async fn closed_loops<S, F, Fut>(
    tasks: Vec<S>,
    window: Duration,
    call: F,
) -> anyhow::Result<(f64, Vec<S>)>
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
                Ok::<_, anyhow::Error>((calls, state))
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut total = 0;
    let mut states = Vec::with_capacity(handles.len());
    for handle in handles {
        let (calls, state) = handle.await??;
        total += calls;
        states.push(state);
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), states))
}

// ---- raw TCP baseline -------------------------------------------------------------------

pub(crate) struct RawEcho {
    pub(crate) addr: SocketAddr,
    pub(crate) server: tokio::task::JoinHandle<()>,
}

impl RawEcho {
    pub(crate) async fn start() -> anyhow::Result<Self> {
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

pub(crate) async fn raw_call(mut conn: RawConn) -> anyhow::Result<RawConn> {
    conn.call(&[7u8; PAYLOAD]).await?;
    Ok(conn)
}

/// `calls` sequential calls on `conn`, timed one by one.
pub(crate) async fn raw_sequential(
    mut conn: RawConn,
    calls: usize,
) -> anyhow::Result<(RawConn, Vec<Duration>)> {
    let payload = [7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        conn.call(&payload).await?;
        samples.push(start.elapsed());
    }
    Ok((conn, samples))
}

pub(crate) struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4 + PAYLOAD),
        })
    }

    /// `n` connections to `addr`, one per call to keep in flight.
    pub(crate) async fn connect_many(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Self>> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(Self::connect(addr).await?);
        }
        Ok(conns)
    }

    pub(crate) async fn call(&mut self, payload: &[u8]) -> anyhow::Result<()> {
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

/// Calls per second of `in_flight` echo calls pipelined on ONE raw TCP connection for
/// `window` (after a warm-up as long): the baseline for a multiplexed connection. The
/// suite's other raw baseline gives each call in flight a connection of its own, whose
/// readiness the kernel reports one by one; here, as on a `Channel`, every call shares one
/// socket. The client keeps `in_flight` requests outstanding and, for the replies each read
/// brings, sends as many new requests in one write; the server is [`RawEcho`]'s (it answers
/// each request as it reads it).
pub(crate) async fn raw_pipelined(
    addr: SocketAddr,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(4 + PAYLOAD);
    request.extend_from_slice(&(PAYLOAD as u32).to_le_bytes());
    request.extend_from_slice(&[7u8; PAYLOAD]);
    let frame = request.len();
    let mut out = request.repeat(in_flight);
    stream.write_all(&out).await?;
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0;
    let measure_from = Instant::now() + window;
    let end = measure_from + window;
    let mut calls = 0u64;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        filled += n;
        let replies = filled / frame;
        buf.copy_within(replies * frame..filled, 0);
        filled -= replies * frame;
        let now = Instant::now();
        if now >= end {
            // The connection closes with its calls in flight; the server's read ends.
            return Ok(calls as f64 / window.as_secs_f64());
        }
        if now >= measure_from {
            calls += replies as u64;
        }
        out.clear();
        for _ in 0..replies {
            out.extend_from_slice(&request);
        }
        stream.write_all(&out).await?;
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
pub(crate) struct Echo {
    data: Vec<u8>,
}

impl Echo {
    /// An echo of `bytes` bytes.
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            data: vec![7; bytes],
        }
    }
}

pub(crate) struct EchoService;

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

pub(crate) struct RpcEcho {
    pub(crate) server: Server,
    pub(crate) client: RpcClient<EchoService>,
}

impl RpcEcho {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let server = Server::listen("127.0.0.1:0".parse()?).await?;
        server.add_service(EchoService);
        let client = RpcClient::new(Channel::connect(server.local_addr()));
        Ok(Self { server, client })
    }

    /// The same echo over mutual TLS: server and client hold node certificates of one
    /// cluster CA, as two nodes of a TLS cluster do. Returns the client's settings too, for
    /// opening further channels.
    pub(crate) async fn start_tls() -> anyhow::Result<(Self, datacake_rpc::TlsConfig)> {
        let [server_tls, client_tls] = bench_tls()?;
        let server = Server::builder()
            .tls(server_tls)
            .listen("127.0.0.1:0".parse()?)
            .await?;
        server.add_service(EchoService);
        let channel = Channel::builder()
            .tls(client_tls.clone())
            .connect(server.local_addr());
        Ok((
            Self {
                server,
                client: RpcClient::new(channel),
            },
            client_tls,
        ))
    }
}

/// TLS settings of two nodes (1 and 2) of a fresh cluster CA.
fn bench_tls() -> anyhow::Result<[datacake_rpc::TlsConfig; 2]> {
    let ca = datacake_node::certs::ClusterCa::generate("bench")?;
    let node = |id| -> anyhow::Result<datacake_rpc::TlsConfig> {
        let cert = ca.issue_node(id, &[])?;
        Ok(datacake_rpc::TlsConfig::mutual_from_pem(
            ca.cert_pem().as_bytes(),
            cert.cert_pem().as_bytes(),
            cert.key_pem().as_bytes(),
        )?)
    };
    Ok([node(1)?, node(2)?])
}

pub(crate) async fn rpc_call(
    client: RpcClient<EchoService>,
) -> anyhow::Result<RpcClient<EchoService>> {
    let reply = client
        .send(&Echo {
            data: vec![7; PAYLOAD],
        })
        .await?;
    anyhow::ensure!(reply.data.len() == PAYLOAD, "echo differs");
    drop(reply);
    Ok(client)
}

/// `calls` sequential calls through `client`, timed one by one.
pub(crate) async fn rpc_sequential(
    client: RpcClient<EchoService>,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    rpc_sequential_of(client, calls, PAYLOAD).await
}

/// `calls` sequential echoes of `bytes` bytes through `client`, timed one by one.
pub(crate) async fn rpc_sequential_of(
    client: RpcClient<EchoService>,
    calls: usize,
    bytes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let msg = Echo::new(bytes);
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let reply = client.send(&msg).await?;
        samples.push(start.elapsed());
        anyhow::ensure!(reply.data.len() == bytes, "echo differs");
    }
    Ok(samples)
}
