//! The HTTP server around [`App`]: the accept loop, HTTPS, limits and graceful shutdown.
//!
//! - At most `max_connections` connections at a time; one over the limit is closed at once
//!   (counted in `kv_http_connections_refused_total`).
//! - A connection must finish a request's headers (the first one, and every next one on a
//!   keep-alive connection) within `header_read_timeout`, else it is closed: a client sending
//!   half a request line, or an idle keep-alive connection, does not hold a slot forever. With
//!   HTTPS the TLS handshake gets the same time.
//! - A failing `accept` (e.g. `EMFILE`: out of file descriptors) is retried after a pause
//!   doubling from 50 ms to 1 s, not at once, which would spin a core while the error lasts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::http::App;

/// How long shutdown waits for in-flight HTTP requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause after failed `accept`s in a row.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How the server treats connections.
#[derive(Debug)]
pub(crate) struct ServerOptions {
    /// HTTPS when set.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The time a client has to send a request's headers (and, with HTTPS, to finish the
    /// handshake).
    pub(crate) header_read_timeout: Duration,
    /// The most connections served at once.
    pub(crate) max_connections: usize,
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

/// Serves HTTP(S) until `shutdown` resolves (with the name of the signal), then drains
/// in-flight requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    options: ServerOptions,
    shutdown: impl Future<Output = &'static str>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let options = Arc::new(options);
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            signal = &mut shutdown => {
                tracing::info!(signal, "shutting down");
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                app.http_metrics().accept_failed();
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "accept failed, pausing before the next");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    signal = &mut shutdown => {
                        tracing::info!(signal, "shutting down");
                        break;
                    }
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            app.http_metrics().connection_refused();
            tracing::debug!(%peer, limit = options.max_connections, "connection limit reached, closing");
            drop(stream);
            continue;
        };
        let (app, options, watcher) = (app.clone(), options.clone(), graceful.watcher());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = app.http_metrics().connection_opened();
            match acceptor {
                None => serve_connection(stream, peer, app.clone(), &options, watcher).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(options.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, app.clone(), &options, watcher).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "tls handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "in-flight requests did not finish in time");
    }
}

/// Serves HTTP/1.1 on one connection until it closes.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Arc<App>,
    options: &ServerOptions,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| app.clone().serve(request));
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
