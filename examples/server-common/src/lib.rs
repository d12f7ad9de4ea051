//! What the example servers (`replicated-kv`, `raft-kv`) share, written once.
//!
//! - [`config`]: settings from defaults, a TOML file, `DATACAKE_*` environment variables and
//!   flags, with one naming rule; `--print-config`. [`node_settings`]: the settings every
//!   server has, their flags and checks.
//! - [`lifecycle`]: a server's `main`, its phases (`starting`, `serving`, `leaving`, as
//!   `/health` reports them), SIGTERM and SIGINT, the bounded graceful shutdown.
//! - [`serve`]: the accept loop around an axum `Router`, HTTP/1.1 (HTTPS with a rustls
//!   [`server_config`]), with a connection limit, a header-read timeout (also for idle
//!   keep-alive connections and TLS handshakes), a stall timeout on writes (a client that
//!   stops reading its answer), a backoff when `accept` fails (e.g. out of file
//!   descriptors), and a graceful drain on shutdown; [`ConnectionStats`] counts what it did,
//!   for the application's `/metrics`.
//! - [`metrics`]: the Prometheus exporter and the HTTP metrics (requests, latency
//!   histograms, errors, connections).
//! - Routing with axum: the application gives [`lifecycle::run`] an axum `Router` and the
//!   names of its routes for the metrics; [`EncodedPath`] reads path parameters as sent
//!   (percent-encoded).
//! - [`ApiError`]: `{"error": code, "message": ...}` errors, an axum `IntoResponse`;
//!   [`read_body`] reads a body within a byte limit (413 `body_too_large` past it, in place
//!   of axum's plain-text body limit) and a stall timeout (408 `body_timeout` when the body
//!   stops coming); [`query_param`] and [`query_pairs`] read query strings as written, so
//!   that a bad parameter is a JSON 400.
#![forbid(unsafe_code)]

pub mod config;
mod eviction;
mod http;
pub mod lifecycle;
pub mod metrics;
pub mod node_settings;
mod routing;
mod server;
mod tls;
mod write_timeout;

pub use datacake_rpc::error_chain;
pub use http::{query_pairs, query_param, read_body, ApiError, PROMETHEUS_TEXT};
pub use routing::EncodedPath;
pub use server::{serve, ConnectionCounts, ConnectionStats, ServerOptions};
pub use tls::{server_config, TlsError};
