//! A server's life: starting, serving, leaving; signals; the bounded graceful shutdown.
//!
//! [`run`] serves HTTP from the start. While the node starts (joins the cluster, opens its
//! storage) every request gets 503 and `/health` says `{"status": "starting"}`. Once started
//! the application's axum [`Router`] answers, and its `/health` says `serving` (200). Every
//! answer is recorded in the HTTP metrics, under the fixed name of the route that matched
//! ([`Started::route_name`]), never a path from the network. The first SIGTERM or
//! SIGINT makes it `leaving` (503): the server stops accepting connections and lets in-flight
//! requests finish, then the application's `stop` runs (the node leaves the cluster), then the
//! application is dropped (its storage closed). All of it must end within the shutdown
//! timeout, else the process exits with status 1; a second signal exits at once with
//! 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::StatusCode;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tower::ServiceExt;
use tracing_subscriber::EnvFilter;

use crate::config::{load, ConfigArgs, Settings, EXIT_CONFIG};
use crate::http::ApiError;
use crate::metrics::HttpMetrics;
use crate::server::{serve, ConnectionStats, ServerOptions};

/// Where a server is in its life, as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Joining the cluster and opening storage: not ready for requests.
    Starting,
    /// Ready: answering requests.
    Serving,
    /// Shutting down after a signal: finishing requests, leaving the cluster.
    Leaving,
}

impl Phase {
    /// Its name, as in `/health`'s `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Leaving => "leaving",
        }
    }
}

/// The current [`Phase`], shared between [`run`] and the application (cheap to clone).
#[derive(Debug, Clone)]
pub struct PhaseCell(Arc<AtomicU8>);

impl Default for PhaseCell {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(Phase::Starting as u8)))
    }
}

impl PhaseCell {
    /// The phase now.
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Leaving,
        }
    }

    fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    /// `/health`'s answer unless serving: 503 `{"status": "starting"|"leaving"}`.
    pub fn not_serving(&self) -> Option<Response> {
        match self.get() {
            Phase::Serving => None,
            phase => Some(health(StatusCode::SERVICE_UNAVAILABLE, phase)),
        }
    }
}

fn health(status: StatusCode, phase: Phase) -> Response {
    #[derive(Serialize)]
    struct Health {
        status: Phase,
    }
    (status, Json(Health { status: phase })).into_response()
}

/// What [`run`] gives the application to start with.
#[derive(Debug, Clone)]
pub struct ServerContext {
    /// The phase, for `/health` (see [`PhaseCell::not_serving`]).
    pub phase: PhaseCell,
    /// The HTTP server's connection counters, for `/metrics`.
    pub connections: Arc<ConnectionStats>,
    /// The HTTP metrics, for `/metrics` ([`HttpMetrics::connections`]).
    pub metrics: HttpMetrics,
}

/// A started application: its routes, and what stops it (the node leaving the cluster).
#[derive(Debug)]
pub struct Started<Stop> {
    /// The application's routes.
    pub router: Router,
    /// The name of the route with a pattern (as given to [`Router::route`], e.g. `"/{key}"`),
    /// as the `route` label of the HTTP metrics; an answer from no route (the router's
    /// fallback) is named `other`.
    pub route_name: fn(&str) -> &'static str,
    /// Awaited once the HTTP server has drained (a future does nothing until then); the
    /// router (and the state it holds) is dropped after it.
    pub stop: Stop,
}

/// How a server's life ended.
#[derive(Debug)]
pub enum Outcome {
    /// Shut down gracefully after a signal (exit status 0).
    Stopped,
    /// Could not start (exit status 1).
    StartFailed(anyhow::Error),
    /// The graceful shutdown took longer than its timeout (exit status 1).
    TimedOut(Duration),
    /// A second signal arrived during the graceful shutdown (exit status 128 + its number).
    Interrupted(&'static str),
}

impl Outcome {
    /// The process's exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Stopped => 0,
            Outcome::StartFailed(_) | Outcome::TimedOut(_) => 1,
            Outcome::Interrupted("SIGINT") => 130,
            Outcome::Interrupted(_) => 143,
        }
    }

    fn log(&self, program: &str) {
        match self {
            Outcome::Stopped => tracing::info!("stopped"),
            Outcome::StartFailed(error) => eprintln!("{program}: {error:#}"),
            Outcome::TimedOut(timeout) => tracing::error!(
                ?timeout,
                "shutdown did not finish within shutdown_timeout_ms; exiting"
            ),
            Outcome::Interrupted(signal) => {
                tracing::warn!(signal, "second signal during shutdown; exiting at once");
            }
        }
    }
}

/// A server's `main`: loads the settings from `config`'s file and `overrides` (the parsed
/// flags and environment) and prints them with `--print-config`; logs to stderr, filtered by
/// `RUST_LOG` (default `info`); runs `run` on a multi-threaded runtime; reports its outcome.
///
/// Exit status: 0 after `--print-config` or a graceful shutdown, 2 for invalid settings,
/// otherwise as [`Outcome::exit_code`].
pub fn main<S, F, Fut>(
    program: &str,
    config: &ConfigArgs,
    overrides: &impl Serialize,
    run: F,
) -> ExitCode
where
    S: Settings,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let settings = match load::<S>(config.config.as_deref(), overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{program}: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.print_config {
        let text = serde_json::to_string_pretty(&settings).expect("settings serialise");
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{program}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(settings));
    // Whatever is left (a task stuck past the timeout) is not waited for.
    runtime.shutdown_background();
    outcome.log(program);
    ExitCode::from(outcome.exit_code())
}

/// Every SIGTERM and SIGINT from now on, by name (Ctrl-C only elsewhere than on Unix). If
/// they cannot be listened for, a warning is logged and nothing is ever received.
pub fn signals() -> mpsc::UnboundedReceiver<&'static str> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::spawn(async move {
                    loop {
                        let name = tokio::select! {
                            Some(()) = term.recv() => "SIGTERM",
                            Some(()) = int.recv() => "SIGINT",
                            else => break,
                        };
                        if tx.send(name).is_err() {
                            break;
                        }
                    }
                });
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGTERM and SIGINT");
                std::mem::forget(tx);
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send("SIGINT").is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Runs a server's life (see the module docs): serves HTTP on `listener` at once,
/// answering 503 `starting` until `start` has started the application; then serves it,
/// recording every request in `metrics`, until the first signal; then shuts down within
/// `shutdown_timeout`.
pub async fn run<Stop, Start, StartFut>(
    listener: TcpListener,
    options: ServerOptions,
    metrics: HttpMetrics,
    shutdown_timeout: Duration,
    start: Start,
) -> Outcome
where
    Stop: Future<Output = ()>,
    Start: FnOnce(ServerContext) -> StartFut,
    StartFut: Future<Output = anyhow::Result<Started<Stop>>>,
{
    let mut signals = signals();
    let context = ServerContext {
        phase: PhaseCell::default(),
        connections: Arc::default(),
        metrics,
    };
    run_with(
        listener,
        options,
        context,
        shutdown_timeout,
        &mut signals,
        start,
    )
    .await
}

async fn run_with<Stop, Start, StartFut>(
    listener: TcpListener,
    options: ServerOptions,
    context: ServerContext,
    shutdown_timeout: Duration,
    signals: &mut mpsc::UnboundedReceiver<&'static str>,
    start: Start,
) -> Outcome
where
    Stop: Future<Output = ()>,
    Start: FnOnce(ServerContext) -> StartFut,
    StartFut: Future<Output = anyhow::Result<Started<Stop>>>,
{
    let phase = context.phase.clone();
    let slot: Arc<OnceLock<Router>> = Arc::default();
    let metrics = context.metrics.clone();
    let starting = Router::new()
        .fallback(starting)
        .layer(middleware::from_fn_with_state(
            Arc::new(Recorder {
                metrics: metrics.clone(),
                route_name: |_| "starting",
                unmatched: "starting",
            }),
            record,
        ));
    let service = {
        let slot = slot.clone();
        tower::service_fn(move |request: http::Request<Incoming>| {
            slot.get().unwrap_or(&starting).clone().oneshot(request)
        })
    };
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        service,
        context.connections.clone(),
        options,
        async move {
            let _ = http_stopped.await;
        },
    ));
    let stop_server = || async move {
        let _ = stop_http.send(());
        let _ = server.await;
    };

    let started = tokio::select! {
        started = start(context) => started,
        Some(signal) = signals.recv() => {
            tracing::info!(signal, "signal before the node was ready: not starting");
            phase.set(Phase::Leaving);
            return shutdown_within(stop_server(), signals, shutdown_timeout).await;
        }
    };
    let Started {
        router,
        route_name,
        stop,
    } = match started {
        Ok(started) => started,
        Err(error) => {
            phase.set(Phase::Leaving);
            stop_server().await;
            return Outcome::StartFailed(error);
        }
    };
    let recorder = Arc::new(Recorder {
        metrics,
        route_name,
        unmatched: "other",
    });
    let _ = slot.set(router.layer(middleware::from_fn_with_state(recorder, record)));
    phase.set(Phase::Serving);
    tracing::info!("serving");

    let Some(signal) = signals.recv().await else {
        // Signals cannot be listened for (logged): serve until killed.
        return std::future::pending().await;
    };
    phase.set(Phase::Leaving);
    tracing::info!(
        signal,
        timeout = ?shutdown_timeout,
        "leaving: finishing http requests, then leaving the cluster"
    );
    let stopping = async move {
        stop_server().await;
        tracing::info!("http server stopped; leaving the cluster");
        stop.await;
        drop(slot);
    };
    shutdown_within(stopping, signals, shutdown_timeout).await
}

/// Runs `stop` to its end within `timeout`, unless a signal comes first.
async fn shutdown_within(
    stop: impl Future<Output = ()>,
    signals: &mut mpsc::UnboundedReceiver<&'static str>,
    timeout: Duration,
) -> Outcome {
    tokio::select! {
        done = tokio::time::timeout(timeout, stop) => match done {
            Ok(()) => Outcome::Stopped,
            Err(_) => Outcome::TimedOut(timeout),
        },
        Some(signal) = signals.recv() => Outcome::Interrupted(signal),
    }
}

/// What [`record`] needs: the metrics, and how to name routes.
#[derive(Debug)]
struct Recorder {
    metrics: HttpMetrics,
    route_name: fn(&str) -> &'static str,
    /// The name of answers from no route.
    unmatched: &'static str,
}

/// Records the answer to a request in the HTTP metrics, under its route's name: a layer of
/// the router, which sees the route that matched.
async fn record(State(recorder): State<Arc<Recorder>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(recorder.unmatched, |pattern| {
            (recorder.route_name)(pattern.as_str())
        });
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    recorder
        .metrics
        .record(route, &method, status, started.elapsed());
    tracing::debug!(%method, path = uri.path(), status = status.as_u16(), "request");
    response
}

/// The answer to any request while starting: 503, `/health` with `{"status": "starting"}`.
async fn starting(request: Request) -> Response {
    if request.uri().path() == "/health" {
        health(StatusCode::SERVICE_UNAVAILABLE, Phase::Starting)
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the node is starting; retry shortly",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_clean_late_or_at_a_second_signal() {
        let (tx, mut signals) = mpsc::unbounded_channel();
        let timeout = Duration::from_secs(10);
        let outcome = shutdown_within(async {}, &mut signals, timeout).await;
        assert_eq!(outcome.exit_code(), 0);

        let slow = tokio::time::sleep(Duration::from_secs(60));
        let outcome = shutdown_within(slow, &mut signals, timeout).await;
        assert!(matches!(outcome, Outcome::TimedOut(t) if t == timeout));
        assert_eq!(outcome.exit_code(), 1);

        let slow = tokio::time::sleep(Duration::from_secs(60));
        let second = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send("SIGINT").unwrap();
        };
        let started = tokio::time::Instant::now();
        let (outcome, ()) = tokio::join!(shutdown_within(slow, &mut signals, timeout), second);
        assert!(matches!(outcome, Outcome::Interrupted("SIGINT")));
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(started.elapsed(), Duration::from_secs(1), "at once");
        assert_eq!(Outcome::Interrupted("SIGTERM").exit_code(), 143);
    }

    fn hello() -> Router {
        Router::new().fallback(|| async { StatusCode::NO_CONTENT })
    }

    async fn get(port: u16, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.ok()?;
        let status = raw.split_whitespace().nth(1)?.parse().ok()?;
        let body = raw.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    #[tokio::test]
    async fn phases_go_from_starting_to_serving_to_leaving() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = ServerOptions {
            tls: None,
            header_read_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
            max_connections: 8,
        };
        let phase = PhaseCell::default();
        let context = ServerContext {
            phase: phase.clone(),
            connections: Arc::default(),
            metrics: HttpMetrics::new("test"),
        };
        let (signal_tx, mut signals) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let stopped = Arc::new(AtomicBool::new(false));
        let start = {
            let stopped = stopped.clone();
            move |context: ServerContext| async move {
                assert_eq!(context.phase.get(), Phase::Starting);
                ready_rx.await?;
                Ok(Started {
                    router: hello(),
                    route_name: |_| "hello",
                    stop: async move { stopped.store(true, Ordering::SeqCst) },
                })
            }
        };
        let life = tokio::spawn(async move {
            let timeout = Duration::from_secs(10);
            run_with(listener, options, context, timeout, &mut signals, start).await
        });

        let (status, body) = get(port, "/health").await.unwrap();
        assert_eq!((status, body.as_str()), (503, r#"{"status":"starting"}"#));
        assert_eq!(get(port, "/kv/a").await.unwrap().0, 503);
        assert_eq!(phase.get(), Phase::Starting);

        ready_tx.send(()).unwrap();
        test_helper::wait_for("serving", Duration::from_secs(10), || async {
            get(port, "/kv/a").await.map(|r| r.0) == Some(204)
        })
        .await;
        assert_eq!(phase.get(), Phase::Serving);
        assert!(phase.not_serving().is_none());

        signal_tx.send("SIGTERM").unwrap();
        let outcome = life.await.unwrap();
        assert!(matches!(outcome, Outcome::Stopped), "{outcome:?}");
        assert_eq!(phase.get(), Phase::Leaving);
        assert_eq!(
            phase.not_serving().map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(stopped.load(Ordering::SeqCst), "stop ran");
        assert!(get(port, "/health").await.is_none(), "the port is closed");
    }
}
