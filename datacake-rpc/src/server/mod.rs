//! [`Server`]: accepts HTTP/2 connections and routes calls to the registered handlers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::connection::{keep_alive, pipe};
use crate::handler::{Call, ErasedHandler};
use crate::http2::head::RequestHead;
use crate::http2::io::{Accepting, Driver, ReadPause, RecvBody, Responder, Stalled};
use crate::http2::state::{Config, Role};
use crate::limits::{Budget, Counters, Held};
use crate::metrics::{Series, SERVER};
use crate::net::{Io, Listener, CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
use crate::payload::ReadLimits;
use crate::status::error_chain;
use crate::{Body, Headers, PeerIdentity, RpcService, ServerStatistics, ServiceRegistry, Status};

mod builder;

pub use builder::{
    ServerBuilder, SettingsError, DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTION_BUFFER, DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_SERVER_BUFFER,
    DEFAULT_SHUTDOWN_GRACE,
};

/// How often the server pings an idle client, and how long an answer may take.
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// The replies to a burst of requests leave in parts: the first after this many replies,
/// each later one as large as all before it; see [`answer_burst`].
const FIRST_PART: usize = 2;
/// A burst of at most this many requests sends its first reply alone; see [`answer_burst`].
const SMALL_BURST: usize = 4;
/// A connection stops reading requests while this many bytes of its replies wait to be
/// written (its client is not reading them), and goes on once they went out.
const PAUSE_READS_AT: usize = 1 << 20;
/// How long a new connection may take to complete the HTTP/2 handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections at once whose handshake (TLS, then HTTP/2's preface) has not
/// finished: a newer one closes the oldest (see
/// [`ServerBuilder::max_connections`](crate::ServerBuilder::max_connections)).
pub const MAX_HANDSHAKING: usize = 128;

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
    series: Series,
}

/// Every call's path is looked up here. Peers only look up: the map holds the paths the
/// server registered, so colliding keys sent on purpose can make a lookup no longer than the
/// map, and a fast hash serves (SipHash cost ~250 instructions a call).
type Routes = HashMap<String, Route, foldhash::fast::RandomState>;

struct Shared {
    routes: RwLock<Routes>,
    /// The series of calls to paths no service serves.
    unknown: Series,
    settings: ServerBuilder,
    /// Request bodies buffered in the whole server; each connection's budget is inside it.
    buffered: Arc<Budget>,
    counters: Arc<Counters>,
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

    /// What the server has refused or closed because of its limits so far, and what it
    /// holds now (see [`ServerBuilder`] for the limits).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let server = datacake_rpc::Server::listen("127.0.0.1:0".parse().unwrap()).await?;
    /// let stats = server.statistics();
    /// println!("{} connections open, {} refused", stats.connections_open, stats.connections_refused);
    /// # Ok(())
    /// # }
    /// ```
    pub fn statistics(&self) -> ServerStatistics {
        ServerStatistics::read(&self.shared.counters, &self.shared.buffered)
    }

    /// Adds a service; its handlers are reachable at once. A service of the same name is
    /// replaced.
    pub fn add_service<Svc: RpcService>(&self, service: Svc) {
        let mut registry = ServiceRegistry::new(service);
        Svc::register_handlers(&mut registry);
        let name = Svc::service_name();
        let series = Series::new(&SERVER, name);
        let mut routes = self.shared.routes.write();
        routes.retain(|_, r| r.service != name);
        for (path, handler) in registry.into_handlers() {
            routes.insert(
                format!("/{name}/{path}"),
                Route {
                    service: name,
                    handler,
                    series: series.clone(),
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

/// The connections whose handshake has not finished yet, oldest first.
///
/// Anyone who reaches the port can open connections and never finish a handshake (with TLS,
/// without a certificate). Each would hold one of the `max_connections` places for
/// [`HANDSHAKE_TIMEOUT`], so a few hundred silent connections a minute would keep every
/// member from reconnecting. Instead, a new connection that finds [`MAX_HANDSHAKING`]
/// handshakes under way, or every place taken, closes the oldest one still handshaking: to
/// keep a member out, a peer would have to open connections faster than the member
/// finishes its handshake (a few milliseconds), not merely keep them open.
#[derive(Default)]
struct Handshaking {
    oldest_first: VecDeque<Handshake>,
}

struct Handshake {
    /// Set by the connection once its HTTP/2 handshake finished.
    done: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Handshaking {
    /// Forgets the connections that finished their handshake or ended.
    fn prune(&mut self) {
        self.oldest_first
            .retain(|h| !h.done.load(Ordering::Acquire) && !h.task.is_finished());
    }

    fn len(&mut self) -> usize {
        self.prune();
        self.oldest_first.len()
    }

    /// Closes the oldest connection still handshaking; `false` if there is none.
    fn close_oldest(&mut self, counters: &Counters) -> bool {
        self.prune();
        let Some(oldest) = self.oldest_first.pop_front() else {
            return false;
        };
        oldest.task.abort();
        Counters::bump(&counters.handshakes_cut);
        true
    }
}

async fn accept_loop<L: Listener>(
    listener: L,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let mut handshaking = Handshaking::default();
    let max = shared.settings.max_connections;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((io, remote_addr)) => {
                    // Connections that ended but were not reaped yet do not count.
                    while connections.len() >= max && connections.try_join_next().is_some() {}
                    if handshaking.len() >= MAX_HANDSHAKING {
                        handshaking.close_oldest(&shared.counters);
                    }
                    if connections.len() >= max {
                        if !handshaking.close_oldest(&shared.counters) {
                            Counters::bump(&shared.counters.connections_refused);
                            debug!(peer = %remote_addr, "connection limit reached, closing the new connection");
                            drop(io);
                            continue;
                        }
                        // The closed one ends at its next poll: wait for it (or any other)
                        // to free its place.
                        connections.join_next().await;
                    }
                    let done = Arc::new(AtomicBool::new(false));
                    let task = connections.spawn(serve_connection(
                        io,
                        remote_addr,
                        shared.clone(),
                        stop.clone(),
                        done.clone(),
                    ));
                    handshaking.oldest_first.push_back(Handshake { done, task });
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

/// The peer of one connection, as every call on it sees it.
struct Caller {
    addr: SocketAddr,
    /// Its verified certificate, on a TLS connection.
    identity: Option<Arc<PeerIdentity>>,
    /// The request bytes this connection may buffer.
    budget: Arc<Budget>,
}

/// Serves one connection: over TLS if the server has it (the handshake and the peer check
/// first, within [`HANDSHAKE_TIMEOUT`]), plaintext otherwise. Sets `handshake_done` once the
/// HTTP/2 handshake finished.
async fn serve_connection<I: Io>(
    io: I,
    remote_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    handshake_done: Arc<AtomicBool>,
) {
    let _open = Held::new(shared.counters.clone(), |c| &c.connections_open, 1);
    let Some(tls) = &shared.settings.tls else {
        return serve_http2(io, remote_addr, None, shared, stop, handshake_done).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io, remote_addr)).await {
        Ok(Ok((io, peer))) => {
            serve_http2(io, remote_addr, Some(peer), shared, stop, handshake_done).await
        }
        Ok(Err(e)) => {
            debug!(peer = %remote_addr, error = %error_chain(&e), "tls connection refused");
        }
        Err(_) => debug!(peer = %remote_addr, "tls handshake timed out"),
    }
}

/// Serves one HTTP/2 connection until the peer leaves, the server stops or the connection
/// idles out (both graceful: no new calls, in-flight ones finish) or keep-alive pings go
/// unanswered.
async fn serve_http2<I: Io>(
    io: I,
    remote_addr: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    handshake_done: Arc<AtomicBool>,
) {
    let settings = &shared.settings;
    let driver = Driver::new(
        io,
        Config {
            role: Role::Server,
            stream_window: STREAM_WINDOW,
            connection_window: CONNECTION_WINDOW,
            max_frame_size: MAX_FRAME_SIZE,
            max_header_list_size: settings.max_header_list_size,
            max_concurrent_streams: settings.max_concurrent_streams,
        },
        Some(ReadPause {
            at: PAUSE_READS_AT,
            count: shared.counters.reads_paused.clone(),
        }),
    );
    let connection = Accepting::new(driver.clone());
    // The connection is driven (read and written) in this task, beside its accept loop.
    let run = driver.clone().run();
    tokio::pin!(run);
    // A peer that never sends the HTTP/2 preface does not get to hold a task forever.
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.handshaken());
    tokio::select! {
        done = handshake => if done.is_err() {
            debug!(peer = %remote_addr, "http/2 handshake timed out");
            return;
        },
        result = &mut run => {
            if let Err(e) = result {
                debug!(peer = %remote_addr, error = %e, "http/2 handshake failed");
            }
            return;
        },
    }
    handshake_done.store(true, Ordering::Release);
    let caller = Caller {
        addr: remote_addr,
        identity,
        budget: Arc::new(Budget::new(
            settings.max_connection_buffer,
            "this connection",
            Some(shared.buffered.clone()),
        )),
    };
    // What ends a connection other than its peer runs beside it, in a task of its own, so
    // the loop below wakes only for the connection's bytes.
    let expires_at = caller.identity.as_ref().and_then(|peer| peer.expires_at());
    let _watcher = AbortOnDrop(tokio::spawn(watch_connection(
        connection.clone(),
        remote_addr,
        shared.clone(),
        stop,
        expires_at,
    )));
    let mut burst = Vec::new();
    let mut accepting = true;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = run.as_mut().poll_unpin(cx) {
            return Poll::Ready(result);
        }
        // Requests arrive only through the driver's reads, made just now in this task: take
        // every one received, then answer them together.
        while accepting {
            match connection.poll_accept_now() {
                Poll::Ready(Some(request)) => burst.push(request),
                // Closing, and every request taken: the driver ends once they are answered
                // (polled again now, as taking them may have ended the last stream).
                Poll::Ready(None) => {
                    accepting = false;
                    cx.waker().wake_by_ref();
                }
                Poll::Pending => break,
            }
        }
        if !burst.is_empty() {
            answer_burst(&driver, &shared, &caller, &mut burst);
        }
        Poll::Pending
    })
    .await;
    if let Err(e) = ended {
        debug!(peer = %remote_addr, error = %e, "connection closed with an error");
    }
}

/// Aborts a task when dropped (with the task that owns it, if that is aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Closes a connection gracefully (GOAWAY: no new calls, in-flight ones finish) when the
/// server stops, the client's certificate expires or the connection idles out, and gives it
/// up when keep-alive pings go unanswered.
async fn watch_connection(
    connection: Accepting,
    remote_addr: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    expires_at: Option<tokio::time::Instant>,
) {
    let settings = &shared.settings;
    let silent_peer = keep_alive(Some(connection.pings()), KEEP_ALIVE, None);
    tokio::pin!(silent_peer);
    let stop_requested = stopped(&mut stop);
    tokio::pin!(stop_requested);
    // A connection lasts no longer than the client's certificate: its next one is checked
    // again (and refused if the certificate was not renewed).
    let certificate_expired = async {
        match expires_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(certificate_expired);
    // Idleness is checked every eighth of the timeout: the connection is busy at a check if
    // a request arrived since the last one or a stream is open now.
    let idle_tick = (settings.idle_timeout / 8).max(Duration::from_millis(1));
    let idle_check = tokio::time::sleep(idle_tick);
    tokio::pin!(idle_check);
    let mut busy_at = tokio::time::Instant::now();
    let mut requests = connection.requests_opened();
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut stop_requested, if !stopping => stopping = true,
            () = &mut certificate_expired, if !stopping => {
                debug!(peer = %remote_addr, "the client's certificate expired, closing the connection");
                stopping = true;
            },
            () = &mut idle_check, if !stopping => {
                let now = tokio::time::Instant::now();
                let opened = connection.requests_opened();
                if opened != requests || connection.has_streams() {
                    busy_at = now;
                    requests = opened;
                }
                if now.duration_since(busy_at) >= settings.idle_timeout {
                    debug!(peer = %remote_addr, "connection idle, closing it");
                    Counters::bump(&shared.counters.connections_closed_idle);
                    stopping = true;
                } else {
                    idle_check.as_mut().reset(now + idle_tick);
                }
            },
            () = &mut silent_peer => {
                debug!(peer = %remote_addr, "keep-alive ping unanswered, closing the connection");
                connection.abandon("keep-alive ping unanswered");
                return;
            },
        }
        if stopping {
            // GOAWAY: no new streams; the driver ends once in-flight ones are done.
            connection.go_away();
            // Only silence is left to watch for.
            (&mut silent_peer).await;
            debug!(peer = %remote_addr, "keep-alive ping unanswered, closing the connection");
            connection.abandon("keep-alive ping unanswered");
            return;
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
/// doubling keeps the number of writes small for large bursts. A small burst (at most
/// [`SMALL_BURST`]) sends its first reply alone: the client has only a few calls to work on,
/// so the sooner it has one, the more of its work overlaps with the server's.
///
/// Measured on the 2-core VM, 2026-12-03, with `benchmarks/examples/echo_probe.rs` (`echo_probe
/// rpc 1500 N`, three runs each): 16 calls in flight went from 113-126k calls/s (four equal
/// parts of at least 4 replies, the previous rule) to 211-214k; 64 in flight from 336-344k
/// to 324-334k; 256 and 1,024 in flight did not move beyond the noise. One write per burst
/// gave 93k (16) and 151k (64) in one run each. The small-burst rule, 2026-12-04 (`echo_probe
/// rpc 1000 N`, two runs each against the same binary without it, the rule picked by an
/// environment variable for the experiment): 2 in flight 21.6-21.8k -> 23.9-24.3k calls/s, 4
/// in flight 45.5-47.1k -> 52.9-54.3k, 8 in flight 168.7-177.3k -> 178.7-180.7k; 12, 16, 64 and
/// 256 in flight within -3% and +4%. Sending the first reply alone for bursts of up to 8 cost
/// 12 and 16 in flight 4-11%.
fn answer_burst<I: Io>(
    driver: &Driver<I>,
    shared: &Arc<Shared>,
    caller: &Caller,
    burst: &mut Vec<(RequestHead, RecvBody, Responder)>,
) {
    let n = burst.len();
    let mut flush_at = if n <= SMALL_BURST { 1 } else { FIRST_PART };
    for (i, (head, body, respond)) in burst.drain(..).enumerate() {
        dispatch(shared, caller, head, body, respond);
        let answered = i + 1;
        if answered == flush_at && answered < n {
            // Writes the replies queued so far.
            driver.flush();
            flush_at *= 2;
        }
    }
}

/// Routes one request. A handler that completes on its first poll (the common case for
/// small calls) is answered right here, in the connection's task; others get a task of
/// their own.
fn dispatch(
    shared: &Arc<Shared>,
    caller: &Caller,
    head: RequestHead,
    body: RecvBody,
    respond: Responder,
) {
    if head.method != http::Method::POST {
        Counters::bump(&shared.counters.methods_refused);
        refuse_method(respond, &head.method);
        return;
    }
    let route = shared
        .routes
        .read()
        .get(head.route())
        .map(|r| (r.handler.clone(), r.series.start()));
    let Some((handler, call_metrics)) = route else {
        let status = Status::unavailable(format!("unknown service or handler: {}", head.route()));
        let result = Err(status);
        shared.unknown.start().finish(&result);
        reply(shared, respond, result, http::HeaderMap::new());
        return;
    };
    let reply_headers = Arc::new(Mutex::new(Headers::new()));
    let settings = &shared.settings;
    let call = Call {
        body: Body::received(body, head.content_length).charged_to(caller.budget.clone()),
        headers: Headers::from_map(head.headers),
        remote_addr: caller.addr,
        peer: caller.identity.clone(),
        limits: ReadLimits {
            max_size: settings.max_body_size,
            max_depth: settings.max_depth,
            // (A timeout too far off to name an instant, such as `Duration::MAX`: none.)
            deadline: tokio::time::Instant::now().checked_add(settings.body_timeout),
            counters: Some(shared.counters.clone()),
        },
        reply_headers: reply_headers.clone(),
    };
    let path = head.path;
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
                let path = path.split('?').next().unwrap_or_default();
                warn!(path = %path, panic = %what, "handler panicked");
                Err(Status::internal(format!(
                    "the handler of {path} panicked (see the server's log)"
                )))
            }
        });
    let take_headers = move || std::mem::take(&mut *reply_headers.lock()).into_map();
    if let Some(result) = (&mut outcome).now_or_never() {
        call_metrics.finish(&result);
        reply(shared, respond, result, take_headers());
        return;
    }
    let mut hard_stop = shared.hard_stop.subscribe();
    let shared = shared.clone();
    let mut respond = respond;
    tokio::spawn(async move {
        let result = tokio::select! {
            result = &mut outcome => result,
            // The caller gave up (e.g. its deadline passed): stop working for it.
            // (`call_metrics`, dropped unfinished, counts the call as cancelled.)
            _ = respond.reset() => return,
            _ = stopped(&mut hard_stop) => return,
        };
        call_metrics.finish(&result);
        reply(&shared, respond, result, take_headers());
    });
}

/// Answers a request that is not a `POST`: `405` naming the allowed method, with an
/// archived [`Status`] except for `HEAD` (whose reply has no body).
fn refuse_method(respond: Responder, method: &http::Method) {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
    let body = if method == http::Method::HEAD {
        Bytes::new()
    } else {
        let status =
            Status::invalid_payload(format!("method {method} not allowed: calls are POST"));
        let bytes = status.to_wire();
        headers.insert(http::header::CONTENT_LENGTH, bytes.len().into());
        bytes
    };
    let _ = respond.respond(http::StatusCode::METHOD_NOT_ALLOWED, &headers, Some(body));
}

/// Sends a handler's outcome: `200` and the reply body, or an error code and the archived
/// `Status`. A whole reply leaves as far as the client's windows allow at once (usually all
/// of it); the rest, and a streamed reply, by a task that waits for room, at most
/// `idle_timeout` at a time.
fn reply(
    shared: &Arc<Shared>,
    respond: Responder,
    result: Result<Body, Status>,
    mut headers: http::HeaderMap,
) {
    let (status, mut body) = match result {
        Ok(body) => (http::StatusCode::OK, body),
        Err(status) => {
            let code = http::StatusCode::from_u16(status.http_code())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            (code, Body::from(status.to_wire()))
        }
    };
    let full = body.as_full();
    if let Some(bytes) = &full {
        crate::body::announce_length(&mut headers, bytes.len());
    }
    let whole = full.is_some();
    let mut send = match respond.respond(status, &headers, full) {
        Ok(send) => send,
        // The caller reset the stream or the connection is gone: nobody to tell.
        Err(_) => return,
    };
    let stall = shared.settings.idle_timeout;
    if !whole {
        tokio::spawn(pipe(body, send, Some(stall), None));
        return;
    }
    let unsent = send.unsent();
    if unsent == 0 {
        return;
    }
    let counters = shared.counters.clone();
    tokio::spawn(async move {
        // What a reader that keeps its window shut pins, counted while it is pinned.
        let _queued = Held::new(counters.clone(), |c| &c.replies_queued_bytes, unsent as u64);
        if let Err(Stalled::Stalled) = send.drained(Some(stall)).await {
            Counters::bump(&counters.replies_stalled);
            debug!(
                ?stall,
                "reply stalled on a shut flow-control window, resetting its stream"
            );
        }
    });
}

/// Resolves once the flag is set (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
