//! [`Channel`]: a lazily connected, shared, multiplexed HTTP/2 connection to one server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::debug;

use crate::connection::{self, pipe, Probe};
use crate::http2::head;
use crate::http2::io::{Client, Driver};
use crate::http2::state::{Config, Role};
use crate::net::{self, Io, Transport, CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
use crate::{error_chain, Body, Status, TlsConfig};

/// The default time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default interval of HTTP/2 keep-alive pings, and how long an answer may take before
/// the connection counts as broken.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A connection to one server, shared by every client built on it.
///
/// `connect` does no I/O: the connection opens on the first call. Cloning is cheap and
/// clones share the connection(s); calls are multiplexed as HTTP/2 streams. When the
/// connection breaks (e.g. the server restarted), the next call opens a new one.
///
/// ```
/// use datacake_rpc::Channel;
///
/// let channel = Channel::connect("127.0.0.1:8000".parse().unwrap());
/// let shared = channel.clone();
/// assert_eq!(shared.remote_addr(), channel.remote_addr());
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    transport: Transport,
    /// `host:port`, sent as each request's `:authority`.
    authority: String,
    connect_timeout: Duration,
    keep_alive: Duration,
    tls: Option<TlsConfig>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// Streams a connection opens before it is retired ([`STREAMS_PER_CONNECTION`]).
    streams_per_connection: u64,
}

/// How often one call is sent again after the server refused its stream unprocessed.
const MAX_REFUSALS: u32 = 3;

/// The most streams one HTTP/2 connection can open (client stream ids are the odd numbers
/// below 2^31).
const STREAMS_PER_CONNECTION: u64 = 1 << 30;

/// A live HTTP/2 connection: the handle to open streams and ping, whether its driver has
/// ended, and the way to ask its keep-alive for an early ping.
#[derive(Clone)]
struct Connection {
    client: Client,
    closed: Arc<AtomicBool>,
    probe: Arc<Probe>,
    /// Streams the connection may still open: HTTP/2 stream ids are odd numbers below 2^31,
    /// so a connection opens at most 2^30 streams, and then every request on it fails.
    streams_left: Arc<AtomicU64>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// No new calls on this connection: the next call opens another. Calls in flight on it
    /// finish, and it closes once the last is done.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.client.retire();
    }

    /// Counts a stream opened; retires the connection once it opened its last.
    fn opened_stream(&self) {
        if self.streams_left.fetch_sub(1, Ordering::Relaxed) <= 1 {
            debug!("connection used every stream id, retiring it");
            self.close();
        }
    }
}

/// One HTTP/2 connection (or none yet).
struct Slot {
    connection: Mutex<Option<Connection>>,
    /// Held while connecting, so concurrent calls wait for one connection attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl Channel {
    /// A channel to `addr` on the real network, with one HTTP/2 connection.
    pub fn connect(addr: SocketAddr) -> Self {
        ChannelBuilder::default().connect(addr)
    }

    /// A channel to `addr` on turmoil's simulated network (use inside a turmoil host;
    /// resolve host names with `turmoil::lookup`).
    #[cfg(feature = "simulation")]
    pub fn connect_simulated(addr: SocketAddr) -> Self {
        ChannelBuilder::default().connect_simulated(addr)
    }

    /// A builder to change the settings.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::default()
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Sends one request to `path` and waits for the reply's head.
    ///
    /// The channel speaks HTTP/2 itself (`src/http2`): a request's HEADERS and DATA leave in
    /// one write, without a task per call.
    pub(crate) async fn call(
        &self,
        path: http::uri::PathAndQuery,
        mut headers: http::HeaderMap,
        mut body: Body,
    ) -> Result<http::Response<Body>, Status> {
        check_request_headers(&headers)?;
        let full = body.as_full();
        if let Some(bytes) = &full {
            crate::body::announce_length(&mut headers, bytes.len());
        }
        let slot = self.inner.pick();
        let mut body = Some(body);
        let mut retried = false;
        let mut refusals = 0;
        loop {
            let connection = self.inner.connection(slot).await?;
            let opened = connection
                .client
                .open(
                    &self.inner.authority,
                    path.as_str(),
                    &headers,
                    full.as_ref(),
                )
                .await;
            let id = match opened {
                Ok(id) => {
                    connection.opened_stream();
                    id
                }
                // Nothing was sent: replace the closed connection and try once more.
                Err(e) => {
                    connection.close();
                    let error = e.to_string();
                    if retried {
                        return Err(self.inner.failed(&error));
                    }
                    debug!(peer = %self.inner.addr, error = %error, "reconnecting");
                    retried = true;
                    continue;
                }
            };
            let reply = connection.client.reply(id);
            // For a streamed body: dropped with this future (the caller gave up), it stops
            // the upload and resets the stream; sent once the reply's head came.
            let mut keep_upload = None;
            // A whole body left with the request's head; a streamed one is sent by a task.
            // (Only a whole body is sent again after a refusal, so a streamed one is still
            // here the first time.)
            if let (None, Some(body)) = (&full, body.take()) {
                let (keep, caller) = tokio::sync::oneshot::channel();
                keep_upload = Some(keep);
                let upload = connection.client.upload(id);
                tokio::spawn(pipe(body, upload, None, Some(caller)));
            }
            let (head, reply_body) = match reply.await {
                Ok(reply) => reply,
                // The server refused the stream unprocessed (above its stream limit before
                // its settings reached us, or closing the connection): a whole body can go
                // again.
                Err(e) if e.is_unprocessed() && full.is_some() && refusals < MAX_REFUSALS => {
                    refusals += 1;
                    debug!(peer = %self.inner.addr, error = %e, "call not processed, sending it again");
                    continue;
                }
                Err(e) => return Err(self.inner.failed(&e.to_string())),
            };
            if let Some(keep) = keep_upload {
                let _ = keep.send(());
            }
            connection.probe.replied();
            let len = head.content_length;
            let mut response = http::Response::new(Body::received(reply_body, len));
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            return Ok(response);
        }
    }
}

/// Refuses request headers HTTP/2 forbids (RFC 9113 §8.2.2): connection-specific ones, and
/// `te` other than `trailers`.
fn check_request_headers(headers: &http::HeaderMap) -> Result<(), Status> {
    for (name, value) in headers {
        if head::is_connection_specific(name, value.as_bytes()) {
            return Err(Status::invalid_payload(format!(
                "request refused: the header {name} is not allowed in HTTP/2"
            )));
        }
    }
    Ok(())
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("addr", &self.inner.addr)
            .field("transport", &self.inner.transport)
            .field("connections", &self.inner.slots.len())
            .finish()
    }
}

impl Channel {
    /// A call on this channel got no answer within `timeout`: ping its connections now and
    /// replace any that does not answer within `timeout` (at least a second, at most the
    /// keep-alive interval).
    pub(crate) fn suspect(&self, timeout: Duration) {
        for slot in self.inner.slots.iter() {
            if let Some(connection) = live(&slot.connection.lock()) {
                connection.probe.request(timeout);
            }
        }
    }
}

impl Inner {
    fn pick(&self) -> &Slot {
        let n = self.slots.len();
        if n == 1 {
            return &self.slots[0];
        }
        &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % n]
    }

    fn failed(&self, error: &str) -> Status {
        Status::connection(format!("call to {} failed: {error}", self.addr))
    }

    async fn connection(&self, slot: &Slot) -> Result<Connection, Status> {
        if let Some(connection) = live(&slot.connection.lock()) {
            return Ok(connection);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(connection) = live(&slot.connection.lock()) {
            return Ok(connection);
        }
        let connection = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| {
                Status::connection(format!(
                    "no connection to {} within {:?}",
                    self.addr, self.connect_timeout
                ))
            })??;
        *slot.connection.lock() = Some(connection.clone());
        Ok(connection)
    }

    async fn open(&self) -> Result<Connection, Status> {
        let refused =
            |e: std::io::Error| Status::connection(format!("cannot connect to {}: {e}", self.addr));
        match self.transport {
            Transport::Tcp => {
                let io = net::connect_tcp(self.addr).await.map_err(refused)?;
                self.secure(io).await
            }
            #[cfg(feature = "simulation")]
            Transport::Simulated => {
                let io = net::connect_simulated(self.addr).await.map_err(refused)?;
                self.secure(io).await
            }
        }
    }

    /// The HTTP/2 handshake on `io`, after the TLS one if the channel has TLS.
    async fn secure<I: Io>(&self, io: I) -> Result<Connection, Status> {
        let Some(tls) = &self.tls else {
            return handshake(io, self.keep_alive, self.streams_per_connection, None).await;
        };
        let (io, server) = tls
            .connect(io, self.addr)
            .await
            .map_err(|e| Status::connection(crate::channel::error_chain(&e)))?;
        // Retired when the server's certificate expires: the next call opens another
        // connection, whose handshake checks the certificate again.
        let retire_at = server.expires_at();
        handshake(io, self.keep_alive, self.streams_per_connection, retire_at).await
    }
}

fn live(connection: &Option<Connection>) -> Option<Connection> {
    connection.as_ref().filter(|c| !c.is_closed()).cloned()
}

/// The HTTP/2 connection on `io` (its preface and settings leave with the first write), and
/// the task that drives it; the connection takes no new calls from `retire_at` on.
async fn handshake<I: Io>(
    io: I,
    keep_alive: Duration,
    streams: u64,
    retire_at: Option<tokio::time::Instant>,
) -> Result<Connection, Status> {
    let driver = Driver::new(
        io,
        Config {
            role: Role::Client,
            max_concurrent_streams: 0,
            stream_window: STREAM_WINDOW,
            connection_window: CONNECTION_WINDOW,
            max_frame_size: MAX_FRAME_SIZE,
            max_header_list_size: MAX_REPLY_HEADER_LIST,
        },
        // A channel always reads (see `ReadPause`); what it queues to write is its own
        // callers' requests.
        None,
    );
    let client = Client::new(driver.clone());
    let closed = Arc::new(AtomicBool::new(false));
    let probe = Arc::new(Probe::default());
    // What ends a connection other than its peer (silence, the server's certificate
    // expiring) is watched by a task of its own, so the driver wakes only for its bytes.
    let silent_peer = connection::keep_alive(Some(client.pings()), keep_alive, Some(probe.clone()));
    let watched = client.clone();
    let retired = closed.clone();
    let watcher = tokio::spawn(async move {
        tokio::pin!(silent_peer);
        if let Some(at) = retire_at {
            tokio::select! {
                () = &mut silent_peer => {},
                () = tokio::time::sleep_until(at) => {
                    debug!("the server's certificate expired, retiring the connection");
                    // As `Connection::close`: calls in flight finish on it.
                    retired.store(true, Ordering::Release);
                    watched.retire();
                    (&mut silent_peer).await;
                },
            }
        } else {
            (&mut silent_peer).await;
        }
        debug!("keep-alive ping unanswered, closing the connection");
        watched.abandon("keep-alive ping unanswered");
    });
    let driver_closed = closed.clone();
    tokio::spawn(async move {
        // Ending (or dropping) `run` closes the connection, failing every call still waiting
        // on it.
        if let Err(e) = driver.run().await {
            debug!(error = %e, "connection closed with an error");
        }
        driver_closed.store(true, Ordering::Release);
        watcher.abort();
    });
    Ok(Connection {
        client,
        closed,
        probe,
        streams_left: Arc::new(AtomicU64::new(streams)),
    })
}

/// The largest reply header list a channel accepts (SETTINGS_MAX_HEADER_LIST_SIZE): a
/// server's default limit on request headers, so both directions allow the same.
const MAX_REPLY_HEADER_LIST: u32 = 16 << 10;

/// Settings of a [`Channel`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ChannelBuilder {
    connections: usize,
    connect_timeout: Duration,
    keep_alive: Duration,
    tls: Option<TlsConfig>,
    streams_per_connection: u64,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        Self {
            connections: 1,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            tls: None,
            streams_per_connection: STREAMS_PER_CONNECTION,
        }
    }
}

impl ChannelBuilder {
    /// How many HTTP/2 connections the channel spreads its calls over (at least 1).
    ///
    /// ```
    /// let channel = datacake_rpc::Channel::builder()
    ///     .connections(2)
    ///     .connect("127.0.0.1:8000".parse().unwrap());
    /// ```
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }

    /// How long establishing a connection may take before the call fails with
    /// [`Connection`](crate::ErrorCode::Connection) (unless the call's own deadline passes
    /// first: then it is a [`Timeout`](crate::ErrorCode::Timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = datacake_rpc::Channel::builder().connect_timeout(Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends an HTTP/2 ping every `interval` and treats the connection as broken (failing its
    /// calls with [`Connection`](crate::ErrorCode::Connection)) when an answer takes longer
    /// than `interval` too. This is how a silent peer (a partition) is noticed; a call that
    /// times out (see [`RpcClient::set_timeout`](crate::RpcClient::set_timeout)) sends a
    /// ping at once rather than waiting for the next one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = datacake_rpc::Channel::builder().keep_alive(Duration::from_secs(1));
    /// ```
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Speaks TLS (mutual: the channel shows its certificate, and the server's must chain to
    /// the same CA and name what [`TlsConfig::require_peer_uri_prefix`] requires). A failed
    /// handshake fails the call with [`Connection`](crate::ErrorCode::Connection), naming
    /// the reason; the handshake counts against the connect timeout.
    ///
    /// ```no_run
    /// # fn tls() -> datacake_rpc::TlsConfig { unimplemented!() }
    /// let channel = datacake_rpc::Channel::builder()
    ///     .tls(tls())
    ///     .connect("127.0.0.1:8000".parse().unwrap());
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How many calls (HTTP/2 streams) one connection carries before the channel retires it
    /// and opens another: between 1 and 2^30, the most an HTTP/2 client connection can open
    /// (its stream ids are the odd numbers below 2^31), which is the default. Calls in flight
    /// on a retired connection finish on it.
    ///
    /// ```
    /// let builder = datacake_rpc::Channel::builder().streams_per_connection(1_000_000);
    /// ```
    pub fn streams_per_connection(mut self, streams: u64) -> Self {
        self.streams_per_connection = streams.clamp(1, STREAMS_PER_CONNECTION);
        self
    }

    /// A channel to `addr` on the real network.
    pub fn connect(self, addr: SocketAddr) -> Channel {
        self.build(addr, Transport::Tcp)
    }

    /// A channel to `addr` on turmoil's simulated network.
    #[cfg(feature = "simulation")]
    pub fn connect_simulated(self, addr: SocketAddr) -> Channel {
        self.build(addr, Transport::Simulated)
    }

    fn build(self, addr: SocketAddr, transport: Transport) -> Channel {
        let authority = addr.to_string();
        let slots = (0..self.connections)
            .map(|_| Slot {
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Channel {
            inner: Arc::new(Inner {
                addr,
                transport,
                authority,
                connect_timeout: self.connect_timeout,
                keep_alive: self.keep_alive,
                tls: self.tls,
                slots,
                next: AtomicUsize::new(0),
                streams_per_connection: self.streams_per_connection,
            }),
        }
    }
}
