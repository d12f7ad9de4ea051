//! [`ServerBuilder`]: a server's settings, with a limit on everything it takes from the
//! network, and their defaults.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::{accept_loop, Server, Shared};
use crate::limits::Budget;
use crate::metrics::{Series, SERVER, UNKNOWN_SERVICE};
use crate::net::Listener;
use crate::{TlsConfig, DEFAULT_MAX_DEPTH};

/// The default largest request body a server accepts: 64 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 64 << 20;
/// The default time in-flight calls get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The default most connections a server keeps open at once: 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// The default most streams (calls) a connection may have open at once: 1,024.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_024;
/// The default largest header list (decoded names and values of one request) accepted:
/// 16 KiB.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 << 10;
/// The default time a connection may stay without an open stream before it is closed:
/// 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The default time a request body has to arrive completely after its headers: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default most bytes of request bodies one connection may have buffered: 64 MiB.
pub const DEFAULT_MAX_CONNECTION_BUFFER: usize = 64 << 20;
/// The default most bytes of request bodies the whole server may have buffered: 512 MiB.
pub const DEFAULT_MAX_SERVER_BUFFER: usize = 512 << 20;

/// Settings of a [`Server`], including a limit on everything it takes from the network.
///
/// Every limit has a default (the `DEFAULT_*` constants) and is counted when it refuses or
/// closes something (see [`Server::statistics`]):
///
/// - [`max_connections`](Self::max_connections): connections past it are closed at once.
/// - [`max_concurrent_streams`](Self::max_concurrent_streams) and
///   [`max_header_list_size`](Self::max_header_list_size): advertised in the HTTP/2 settings
///   and enforced (streams past the limit are refused with `REFUSED_STREAM`, request heads
///   past it answered `431`).
/// - [`idle_timeout`](Self::idle_timeout): a connection without an open stream that long is
///   closed gracefully (GOAWAY), even if it answers pings; a whole reply whose reader keeps
///   its flow-control window shut that long is dropped.
/// - [`body_timeout`](Self::body_timeout): a request body must arrive completely within it.
/// - [`max_body_size`](Self::max_body_size), [`max_connection_buffer`](Self::max_connection_buffer)
///   and [`max_server_buffer`](Self::max_server_buffer): bytes of request bodies collected.
/// - [`max_depth`](Self::max_depth): how deeply a request archive may nest.
/// - Calls are `POST`; any other method gets `405 Method Not Allowed`.
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerBuilder {
    pub(super) max_body_size: usize,
    pub(super) shutdown_grace: Duration,
    pub(super) max_connections: usize,
    pub(super) max_concurrent_streams: u32,
    pub(super) max_header_list_size: u32,
    pub(super) idle_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) max_connection_buffer: usize,
    pub(super) max_server_buffer: usize,
    pub(super) max_depth: usize,
    /// TLS for every connection, or plaintext.
    pub(super) tls: Option<TlsConfig>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connection_buffer: DEFAULT_MAX_CONNECTION_BUFFER,
            max_server_buffer: DEFAULT_MAX_SERVER_BUFFER,
            max_depth: DEFAULT_MAX_DEPTH,
            tls: None,
        }
    }
}

/// Server settings that contradict each other; returned by [`ServerBuilder::listen`] as the
/// inner error of an [`io::ErrorKind::InvalidInput`] error.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use datacake_rpc::{Server, SettingsError};
///
/// let err = Server::builder()
///     .max_body_size(1 << 20)
///     .max_connection_buffer(1 << 10)
///     .listen("127.0.0.1:0".parse().unwrap())
///     .await
///     .unwrap_err();
/// let settings = err.get_ref().and_then(|e| e.downcast_ref::<SettingsError>());
/// assert!(matches!(settings, Some(SettingsError::ConnectionBufferBelowBodySize { .. })));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A connection's buffer could never hold one largest body.
    #[error("max_connection_buffer ({buffer} bytes) is below max_body_size ({body} bytes)")]
    ConnectionBufferBelowBodySize {
        /// The connection's buffer budget.
        buffer: usize,
        /// The largest body.
        body: usize,
    },
    /// The server's buffer could never hold one connection's.
    #[error(
        "max_server_buffer ({server} bytes) is below max_connection_buffer ({connection} bytes)"
    )]
    ServerBufferBelowConnectionBuffer {
        /// The server's buffer budget.
        server: usize,
        /// A connection's buffer budget.
        connection: usize,
    },
}

impl ServerBuilder {
    /// The largest request body accepted; larger ones get
    /// [`PayloadTooLarge`](crate::ErrorCode::PayloadTooLarge), those that announce it
    /// (Content-Length) before a byte is read. At most
    /// [`max_connection_buffer`](Self::max_connection_buffer). A streamed
    /// [`Body`](crate::Body) request is not bound by it: its handler reads it at its own
    /// pace and decides how much to take.
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

    /// The most connections open at once ([`DEFAULT_MAX_CONNECTIONS`]). A connection
    /// arriving past it closes the oldest connection whose handshake (TLS, then HTTP/2's
    /// preface) has not finished, if there is one
    /// ([`ServerStatistics::handshakes_cut`](crate::ServerStatistics::handshakes_cut)); else it
    /// is closed at once
    /// ([`ServerStatistics::connections_refused`](crate::ServerStatistics::connections_refused))
    /// and the open ones are unaffected. At most [`MAX_HANDSHAKING`](crate::MAX_HANDSHAKING)
    /// connections handshake at once, the same way: silent connections cannot keep
    /// members out.
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_connections(64);
    /// ```
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// The most streams (calls in flight) one connection may have open
    /// ([`DEFAULT_MAX_CONCURRENT_STREAMS`]), advertised as HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: a [`Channel`](crate::Channel) queues calls past it,
    /// a client ignoring it has the extra streams refused (`REFUSED_STREAM`).
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_concurrent_streams(256);
    /// ```
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// The largest header list of a request ([`DEFAULT_MAX_HEADER_LIST_SIZE`]), advertised as
    /// HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`; larger requests are answered `431`.
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_header_list_size(8 << 10);
    /// ```
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.max_header_list_size = bytes;
        self
    }

    /// How long a connection may stay without an open stream ([`DEFAULT_IDLE_TIMEOUT`])
    /// before the server closes it gracefully (GOAWAY), answered pings or not (counted in
    /// [`ServerStatistics::connections_closed_idle`](crate::ServerStatistics::connections_closed_idle)); checked every eighth of it, so the
    /// close comes within `1⅛ × timeout`. A [`Channel`](crate::Channel) opens a new
    /// connection on its next call.
    ///
    /// It also bounds how long a reply (whole or streamed) waits on a peer that keeps its
    /// flow-control window shut: a reply that could send nothing for this long is dropped and
    /// its stream reset (counted in [`ServerStatistics::replies_stalled`](crate::ServerStatistics::replies_stalled)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = datacake_rpc::Server::builder().idle_timeout(Duration::from_secs(60));
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a request body may take to arrive completely, counted from its headers
    /// ([`DEFAULT_BODY_TIMEOUT`]). A message body that is late fails the call with
    /// [`Timeout`](crate::ErrorCode::Timeout) (counted in
    /// [`ServerStatistics::bodies_timed_out`](crate::ServerStatistics::bodies_timed_out)), its stream is reset and its bytes freed.
    /// Streamed [`Body`](crate::Body) requests are read at their handler's pace and are not bound by it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = datacake_rpc::Server::builder().body_timeout(Duration::from_secs(5));
    /// ```
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The most bytes of request bodies one connection may have buffered at once
    /// ([`DEFAULT_MAX_CONNECTION_BUFFER`]): bodies being collected, and message bodies
    /// while their handler runs. A body that would go past it fails with
    /// [`ResourceExhausted`](crate::ErrorCode::ResourceExhausted) (counted in
    /// [`ServerStatistics::bodies_over_budget`](crate::ServerStatistics::bodies_over_budget)) while other calls go on. At least
    /// [`max_body_size`](Self::max_body_size). A streamed [`Body`](crate::Body) request is not charged:
    /// its handler reads it chunk by chunk, and what it keeps is its own business (the
    /// connection holds at most the flow-control window of it unread).
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_connection_buffer(128 << 20);
    /// ```
    pub fn max_connection_buffer(mut self, bytes: usize) -> Self {
        self.max_connection_buffer = bytes;
        self
    }

    /// The most bytes of request bodies the whole server may have buffered at once
    /// ([`DEFAULT_MAX_SERVER_BUFFER`]); as
    /// [`max_connection_buffer`](Self::max_connection_buffer), summed over connections. At
    /// least `max_connection_buffer`.
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_server_buffer(1 << 30);
    /// ```
    pub fn max_server_buffer(mut self, bytes: usize) -> Self {
        self.max_server_buffer = bytes;
        self
    }

    /// How deeply a request archive may nest, in subtrees (each pointer validation follows:
    /// `Box`, `Vec`, `String`, ...; the root counts as one) ([`DEFAULT_MAX_DEPTH`]). Deeper
    /// archives are refused with [`InvalidPayload`](crate::ErrorCode::InvalidPayload)
    /// (counted in [`ServerStatistics::payloads_too_deep`](crate::ServerStatistics::payloads_too_deep)) instead of recursing until the
    /// stack overflows.
    ///
    /// ```
    /// let builder = datacake_rpc::Server::builder().max_depth(64);
    /// ```
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Serves TLS only (mutual: every client shows a certificate from the cluster CA);
    /// handlers see the caller's certificate through [`Request::peer`](crate::Request::peer).
    /// Without it the server speaks plaintext HTTP/2, for tests and trusted networks only.
    /// A connection whose handshake fails or whose certificate is refused is closed before
    /// any call is read from it; the handshake counts against the connection limit and must
    /// finish within 10 seconds.
    ///
    /// ```no_run
    /// # fn tls() -> datacake_rpc::TlsConfig { unimplemented!() }
    /// let builder = datacake_rpc::Server::builder().tls(tls());
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn check(&self) -> Result<(), SettingsError> {
        if self.max_connection_buffer < self.max_body_size {
            return Err(SettingsError::ConnectionBufferBelowBodySize {
                buffer: self.max_connection_buffer,
                body: self.max_body_size,
            });
        }
        if self.max_server_buffer < self.max_connection_buffer {
            return Err(SettingsError::ServerBufferBelowConnectionBuffer {
                server: self.max_server_buffer,
                connection: self.max_connection_buffer,
            });
        }
        Ok(())
    }

    /// Binds `addr` on the real network and starts serving. Contradictory settings fail with
    /// [`io::ErrorKind::InvalidInput`] carrying a [`SettingsError`].
    pub async fn listen(self, addr: SocketAddr) -> io::Result<Server> {
        self.check().map_err(invalid)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start(listener, local_addr))
    }

    /// Binds `addr` on turmoil's simulated network and starts serving.
    #[cfg(feature = "simulation")]
    pub async fn listen_simulated(self, addr: SocketAddr) -> io::Result<Server> {
        self.check().map_err(invalid)?;
        let listener = turmoil::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(self.start(listener, local_addr))
    }

    fn start<L: Listener>(self, listener: L, local_addr: SocketAddr) -> Server {
        let (stop, stop_rx) = watch::channel(false);
        let grace = self.shutdown_grace;
        let shared = Arc::new(Shared {
            routes: RwLock::default(),
            unknown: Series::new(&SERVER, UNKNOWN_SERVICE),
            buffered: Arc::new(Budget::new(self.max_server_buffer, "the server", None)),
            counters: Arc::default(),
            settings: self,
            hard_stop: watch::channel(false).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx, grace));
        Server {
            local_addr,
            shared,
            stop,
            task: Mutex::new(Some(task)),
        }
    }
}

fn invalid(e: SettingsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
