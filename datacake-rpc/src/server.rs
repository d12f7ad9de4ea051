//! [`Server`]: accepts HTTP/2 connections and routes calls to the registered handlers.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::channel::{describe, keep_alive};
use crate::handler::{Call, ErasedHandler};
use crate::net::{Io, Listener, CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
use crate::{Body, Headers, PeerIdentity, RpcService, ServiceRegistry, Status, TlsConfig};

/// The default largest request body a server accepts: 64 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 64 << 20;
/// The default time in-flight calls get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const MAX_CONCURRENT_STREAMS: u32 = 16_384;
/// How often the server pings an idle client, and how long an answer may take.
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// The replies to a burst of requests leave in parts: the first after this many replies,
/// each later one as large as all before it; see [`answer_burst`].
const FIRST_PART: usize = 2;
/// How long a new connection may take to complete the HTTP/2 handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An RPC server: listens on one address and serves every service added to it.
///
/// Services are added and removed at runtime. Dropping the server shuts it down (in the
/// background); [`shutdown`](Self::shutdown) does so and waits.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let server = datacake_rpc::Server::listen("127.0.0.1:0".parse().unwrap()).await?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Route {
    service: &'static str,
    handler: ErasedHandler,
}

struct Shared {
    routes: RwLock<HashMap<String, Route>>,
    max_body_size: usize,
    /// TLS for every connection, or plaintext.
    tls: Option<TlsConfig>,
    /// Set once the grace period is over: handlers still running are abandoned.
    hard_stop: watch::Sender<bool>,
}

impl Server {
    /// Listens on `addr` (port 0 picks a free port) with the default settings.
    pub async fn listen(addr: SocketAddr) -> io::Result<Self> {
        ServerBuilder::default().listen(addr).await
    }

    /// Listens on `addr` on turmoil's simulated network (call inside a turmoil host).
    #[cfg(feature = "simulation")]
    pub async fn listen_simulated(addr: SocketAddr) -> io::Result<Self> {
        ServerBuilder::default().listen_simulated(addr).await
    }

    /// A builder to change the settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds a service; its handlers are reachable at once. A service of the same name is
    /// replaced.
    pub fn add_service<Svc: RpcService>(&self, service: Svc) {
        let mut registry = ServiceRegistry::new(service);
        Svc::register_handlers(&mut registry);
        let name = Svc::service_name();
        let mut routes = self.shared.routes.write();
        routes.retain(|_, r| r.service != name);
        for (path, handler) in registry.into_handlers() {
            routes.insert(
                format!("/{name}/{path}"),
                Route {
                    service: name,
                    handler,
                },
            );
        }
    }

    /// Removes the service called `name` (exactly its handlers; other services keep theirs).
    pub fn remove_service(&self, name: &str) {
        self.shared.routes.write().retain(|_, r| r.service != name);
    }

    /// Stops accepting connections, lets in-flight calls finish within the grace period,
    /// then abandons what is left and returns.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<String> = self.shared.routes.read().keys().cloned().collect();
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("routes", &routes)
            .finish()
    }
}

/// Settings of a [`Server`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerBuilder {
    max_body_size: usize,
    shutdown_grace: Duration,
    tls: Option<TlsConfig>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// The largest request body accepted; larger ones get
    /// [`PayloadTooLarge`](crate::ErrorCode::PayloadTooLarge).
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_body_size(1 << 20);
    /// ```
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// How long in-flight calls may run after [`Server::shutdown`] before they are abandoned.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = datacake_rpc::Server::builder().shutdown_grace(Duration::from_secs(1));
    /// ```
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Serves TLS only (mutual: every client shows a certificate from the cluster CA);
    /// handlers see the caller's certificate through [`Request::peer`](crate::Request::peer).
    /// Without it the server speaks plaintext HTTP/2, for tests and trusted networks only.
    /// A connection whose handshake fails or whose certificate is refused is closed before
    /// any call is read from it.
    ///
    /// ```no_run
    /// # fn tls() -> datacake_rpc::TlsConfig { unimplemented!() }
    /// let builder = datacake_rpc::Server::builder().tls(tls());
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds `addr` on the real network and starts serving.
    pub async fn listen(self, addr: SocketAddr) -> io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start(listener, local_addr))
    }

    /// Binds `addr` on turmoil's simulated network and starts serving.
    #[cfg(feature = "simulation")]
    pub async fn listen_simulated(self, addr: SocketAddr) -> io::Result<Server> {
        let listener = turmoil::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start(listener, local_addr))
    }

    fn start<L: Listener>(self, listener: L, local_addr: SocketAddr) -> Server {
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            routes: RwLock::new(HashMap::new()),
            max_body_size: self.max_body_size,
            tls: self.tls,
            hard_stop: watch::channel(false).0,
        });
        let task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            stop_rx,
            self.shutdown_grace,
        ));
        Server {
            local_addr,
            shared,
            stop,
            task: Mutex::new(Some(task)),
        }
    }
}

async fn accept_loop<L: Listener>(
    listener: L,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((io, remote_addr)) => {
                    connections.spawn(serve_connection(io, remote_addr, shared.clone(), stop.clone()));
                },
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // E.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                },
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {},
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            remaining = connections.len(),
            "shutdown grace over, closing connections"
        );
    }
    // Close the sockets first, then release handlers still running, so their callers see
    // the connection go (and not a reply).
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    shared.hard_stop.send_replace(true);
}

/// Serves one connection: over TLS if the server has it (the handshake and the peer check
/// first, within [`HANDSHAKE_TIMEOUT`]), plaintext otherwise.
async fn serve_connection<I: Io>(
    io: I,
    remote_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let Some(tls) = &shared.tls else {
        return serve_http2(io, remote_addr, None, shared, stop).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io, remote_addr)).await {
        Ok(Ok((io, peer))) => serve_http2(io, remote_addr, Some(peer), shared, stop).await,
        Ok(Err(e)) => {
            debug!(peer = %remote_addr, error = %crate::tls::chain(&e), "tls connection refused");
        }
        Err(_) => debug!(peer = %remote_addr, "tls handshake timed out"),
    }
}

/// Serves one HTTP/2 connection until the peer leaves, the server stops (graceful: no new
/// calls, in-flight ones finish) or keep-alive pings go unanswered.
async fn serve_http2<I: Io>(
    io: I,
    remote_addr: SocketAddr,
    peer: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(1 << 20)
        .handshake::<_, Bytes>(io);
    // A peer that never sends the HTTP/2 preface does not get to hold a task forever.
    let mut connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            debug!(peer = %remote_addr, error = %describe(&e), "http/2 handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %remote_addr, "http/2 handshake timed out");
            return;
        }
    };
    let silent_peer = keep_alive(connection.ping_pong(), KEEP_ALIVE, None);
    tokio::pin!(silent_peer);
    // Made once: a `wait_for` made afresh in every round of the loop costs a borrow and a
    // waker registration each time the connection wakes.
    let stop_requested = stopped(&mut stop);
    tokio::pin!(stop_requested);
    let (mut stopping, mut shutdown_sent) = (false, false);
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok(first)) => {
                    // Take every request already received (each `accept` flushes), then
                    // answer them together.
                    let mut burst = vec![first];
                    while let Some(Some(Ok(next))) = connection.accept().now_or_never() {
                        burst.push(next);
                    }
                    answer_burst(&mut connection, &shared, remote_addr, &peer, burst);
                },
                Some(Err(e)) => {
                    debug!(peer = %remote_addr, error = %describe(&e), "connection closed with an error");
                    break;
                },
                None => break,
            },
            () = &mut stop_requested, if !stopping => stopping = true,
            () = &mut silent_peer => {
                debug!(peer = %remote_addr, "keep-alive ping unanswered, closing the connection");
                break;
            },
        }
        if stopping && !shutdown_sent {
            // GOAWAY: no new streams; `accept` returns `None` once in-flight ones are done.
            connection.graceful_shutdown();
            shutdown_sent = true;
        }
    }
}

/// Answers requests that arrived together, flushing the replies in parts that double in
/// size: after [`FIRST_PART`] replies, then after twice as many, and so on (a burst of `n`
/// leaves in about `log2(n)` writes).
///
/// Not one write per reply: that would cost a syscall each. Not one write for the whole
/// burst either: then the client waits, idle, until the server has worked through the last
/// request, and the server waits, idle, until the client has worked through every reply and
/// sent its next requests, each side paying a wake-up per turn. An early first part wakes
/// the client while the server is still answering the rest, so both sides work at once, and
/// doubling keeps the number of writes small for large bursts.
///
/// Measured on the 2-core VM, 2026-12-03, with `benchmarks/examples/echo_probe.rs` (`echo_probe
/// rpc 1500 N`, three runs each): 16 calls in flight went from 113-126k calls/s (four equal
/// parts of at least 4 replies, the previous rule) to 211-214k; 64 in flight from 336-344k
/// to 324-334k; 256 and 1,024 in flight did not move beyond the noise. One write per burst
/// gave 93k (16) and 151k (64) in one run each.
fn answer_burst<I: Io>(
    connection: &mut h2::server::Connection<I, Bytes>,
    shared: &Arc<Shared>,
    remote_addr: SocketAddr,
    peer: &Option<Arc<PeerIdentity>>,
    burst: Vec<(
        http::Request<h2::RecvStream>,
        h2::server::SendResponse<Bytes>,
    )>,
) {
    let n = burst.len();
    let mut flush_at = FIRST_PART;
    for (i, (request, respond)) in burst.into_iter().enumerate() {
        dispatch(shared, remote_addr, peer, request, respond);
        let answered = i + 1;
        if answered == flush_at && answered < n {
            // Drives the connection once, which writes the replies buffered so far. Any
            // request it reads stays queued for the next `accept`; the caller's next
            // `accept` registers the waker, so the no-op one used here does not matter.
            let _ = std::future::poll_fn(|cx| connection.poll_closed(cx)).now_or_never();
            flush_at *= 2;
        }
    }
}

/// Routes one request. A handler that completes on its first poll (the common case for
/// small calls) is answered right here, in the connection's task; others get a task of
/// their own.
fn dispatch(
    shared: &Arc<Shared>,
    remote_addr: SocketAddr,
    peer: &Option<Arc<PeerIdentity>>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (parts, body) = request.into_parts();
    let handler = shared
        .routes
        .read()
        .get(parts.uri.path())
        .map(|r| r.handler.clone());
    let Some(handler) = handler else {
        let status =
            Status::unavailable(format!("unknown service or handler: {}", parts.uri.path()));
        reply(respond, Err(status), http::HeaderMap::new());
        return;
    };
    let reply_headers = Arc::new(Mutex::new(Headers::new()));
    let call = Call {
        body: Body::h2(body, content_length(&parts.headers)),
        headers: Headers::from_map(parts.headers),
        remote_addr,
        peer: peer.clone(),
        max_body_size: shared.max_body_size,
        reply_headers: reply_headers.clone(),
    };
    let path = parts.uri;
    // The handler's future is boxed already (so this is `Unpin`): polled in place first,
    // moved into a task only if it is not done at once.
    let mut outcome = AssertUnwindSafe(handler(call))
        .catch_unwind()
        .map(move |outcome| match outcome {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // The panic's text goes to the log only: it may hold anything (internal
                // paths, data), and the caller is not necessarily trusted.
                warn!(path = %path.path(), panic = %what, "handler panicked");
                Err(Status::internal(format!(
                    "the handler of {} panicked (see the server's log)",
                    path.path()
                )))
            }
        });
    let take_headers = move || std::mem::take(&mut *reply_headers.lock()).into_map();
    if let Some(result) = (&mut outcome).now_or_never() {
        reply(respond, result, take_headers());
        return;
    }
    let mut hard_stop = shared.hard_stop.subscribe();
    tokio::spawn(async move {
        let result = tokio::select! {
            result = &mut outcome => result,
            // The caller gave up (e.g. its deadline passed): stop working for it.
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
            _ = stopped(&mut hard_stop) => return,
        };
        reply(respond, result, take_headers());
    });
}

/// Sends a handler's outcome: `200` and the reply body, or an error code and the archived
/// `Status`.
fn reply(
    mut respond: h2::server::SendResponse<Bytes>,
    result: Result<Body, Status>,
    headers: http::HeaderMap,
) {
    let (status, mut body) = match result {
        Ok(body) => (http::StatusCode::OK, body),
        Err(status) => {
            let code = http::StatusCode::from_u16(status.http_code())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            (code, Body::from(status.to_wire()))
        }
    };
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    let full = body.as_full();
    if let Some(bytes) = &full {
        crate::body::announce_length(response.headers_mut(), bytes.len());
    }
    let end_of_stream = full.as_ref().is_some_and(|b| b.is_empty());
    let mut stream = match respond.send_response(response, end_of_stream) {
        Ok(stream) => stream,
        // The caller reset the stream or the connection is gone: nobody to tell.
        Err(_) => return,
    };
    match full {
        Some(bytes) if bytes.is_empty() => {}
        Some(bytes) => {
            let _ = stream.send_data(bytes, true);
        }
        None => {
            tokio::spawn(crate::channel::pipe(body, stream));
        }
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Resolves once the flag is set (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
