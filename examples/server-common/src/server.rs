//! The HTTP server around an axum `Router` (or any tower service like it): the accept loop,
//! HTTPS, limits and graceful shutdown. (Not `axum::serve`, which has neither a connection
//! limit nor a header-read timeout nor HTTPS.) Each connection is served by hyper, calling a
//! clone of the service per request.
//!
//! - At most `max_connections` connections at a time. With every slot taken, a new
//!   connection closes the connection idle longest (no request in progress: before its first
//!   request, between requests, or still sending headers) and takes its slot, so connections
//!   that send nothing cannot keep others out (see [`eviction`](crate::eviction)); if every
//!   connection is busy, the new one is closed at once. Both are counted in
//!   [`ConnectionStats`].
//! - A connection must finish a request's headers (the first one, and every next one on a
//!   keep-alive connection) within `header_read_timeout`, else it is closed. With HTTPS the
//!   TLS handshake gets the same time.
//! - A connection whose response stops moving, no byte written for `stall_timeout` (the
//!   client reading nothing), is closed. A request body is read by its handler:
//!   [`read_body`](crate::read_body) waits a bounded time for each next piece of it (the
//!   servers give it `stall_timeout` too), then answers 408 and closes the connection. (A
//!   body the handler leaves unread, and not yet all arrived, makes hyper close the
//!   connection once the handler has answered.)
//! - So a client that stops sending or reading (half a request line, an idle keep-alive
//!   connection, a body that stops coming, an answer it does not read) does not hold a slot
//!   forever, while one that keeps sending or reading, however slowly, is served.
//! - A failing `accept` (e.g. `EMFILE`: out of file descriptors) is retried after a pause
//!   doubling from 50 ms to 1 s, not at once, which would spin a core while the error lasts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::eviction::{Connections, Tracked};
use crate::write_timeout::WriteTimeout;

/// The first pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause after failed `accept`s in a row.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a new connection at the limit waits for the slot of the idle connection it
/// closed (which frees it at once, unless a request began there meanwhile); then it is
/// refused.
const EVICTION_WAIT: Duration = Duration::from_millis(250);

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTPS when set (see [`server_config`](crate::server_config)).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The time a client has to send a request's headers (and, with HTTPS, to finish the
    /// handshake).
    pub header_read_timeout: Duration,
    /// The longest a write to the connection (a response, with HTTPS also the TLS records)
    /// may wait, the client reading nothing, before the connection is closed.
    pub stall_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
}

/// Connection counters the server keeps up to date; the application exports them.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    accept_errors: AtomicU64,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once for being over the connection limit, since start.
    pub refused: u64,
    /// Idle connections closed to make room for a new one at the connection limit, since
    /// start.
    pub evicted: u64,
    /// Failed `accept`s (e.g. out of file descriptors), since start.
    pub accept_errors: u64,
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
struct OpenConnection(Arc<ConnectionStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionStats {
    /// The counters now.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }

    fn opened(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// The pause before the next `accept` after failures in a row: 50 ms, doubling to 1 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The pause after one more failure.
    fn next_delay(&mut self) -> Duration {
        let delay = ACCEPT_BACKOFF_MIN
            .saturating_mul(1 << self.failures.min(16))
            .min(ACCEPT_BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Serves HTTP/1.1 (HTTPS with [`ServerOptions::tls`]) on `listener`, answering each request
/// with `service` (an axum `Router`, or a tower service like it: always ready, never failing),
/// until `shutdown` resolves; then closes the listener and idle connections
/// and waits for in-flight requests to finish (the caller bounds that wait: see
/// [`lifecycle::run`](crate::lifecycle::run)).
///
/// `stats` counts open, refused and failed connections.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    stats: Arc<ConnectionStats>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // (Clamped: tokio's semaphore panics above its maximum. The servers' settings refuse
    // such a value at start.)
    let slots = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let connections = Arc::new(Connections::default());
    let options = Arc::new(options);
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "accept failed, pausing before the next");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // Full: the connection idle longest gives way, if there is one.
            Err(_) if connections.evict_idlest() => {
                stats.evicted.fetch_add(1, Ordering::Relaxed);
                tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit = options.max_connections, "connection limit reached, closing");
            drop(stream);
            continue;
        };
        let (service, options, watcher) = (service.clone(), options.clone(), graceful.watcher());
        let acceptor = acceptor.clone();
        let open = stats.opened();
        let registration = connections.register();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let tracked = registration.tracked().clone();
            let served = async {
                match acceptor {
                    None => {
                        serve_connection(stream, peer, service, &options, watcher, &tracked).await
                    }
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(options.header_read_timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                serve_connection(
                                    stream, peer, service, &options, watcher, &tracked,
                                )
                                .await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "tls handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                // Idle (nothing in progress) and asked to make room: closed.
                () = registration.tracked().evicted() => {
                    tracing::debug!(%peer, "idle connection closed to make room for a new one");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection until it closes.
async fn serve_connection<IO, S>(
    stream: IO,
    peer: SocketAddr,
    service: S,
    options: &ServerOptions,
    watcher: hyper_util::server::graceful::Watcher,
    tracked: &Arc<Tracked>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let tracked = tracked.clone();
    let service = service_fn(move |request| {
        // Busy from the request's head until its response body is written (dropped).
        let busy = tracked.begin();
        let answer = service.clone().oneshot(request);
        async move {
            let response: Response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _held = &busy;
                    frame
                }))
            }))
        }
    });
    let stream = WriteTimeout::new(stream, options.stall_timeout);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "http connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), ACCEPT_BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), ACCEPT_BACKOFF_MIN);
    }
}
