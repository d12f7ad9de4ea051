//! What the example servers (`replicated-kv`, `raft-kv`) share, written once.
//!
//! - [`config`]: settings from defaults, a TOML file, `DATACAKE_*` environment variables and
//!   flags, with one naming rule; `--print-config`. [`node_settings`]: the settings every
//!   server has, their flags and checks.
//! - [`lifecycle`]: a server's `main`, its phases (`starting`, `serving`, `leaving`, as
//!   `/health` reports them), SIGTERM and SIGINT, the bounded graceful shutdown.
//! - [`serve`]: the accept loop around a request handler, HTTP/1.1 (HTTPS with a rustls
//!   [`server_config`]), with a connection limit, a header-read timeout (also for idle
//!   keep-alive connections and TLS handshakes), a backoff when `accept` fails (e.g. out of
//!   file descriptors), and a graceful drain on shutdown; [`ConnectionStats`] counts what it
//!   did, for the application's `/metrics`.
//! - [`metrics`]: the Prometheus exporter and the HTTP metrics (requests, latency
//!   histograms, errors, connections).
//! - [`ApiError`] and [`json`]: JSON answers and `{"error": code, "message": ...}` errors;
//!   [`read_body`] reads a body within a byte limit (413 past it); [`query_param`].
#![forbid(unsafe_code)]

pub mod config;
mod http;
pub mod lifecycle;
pub mod metrics;
pub mod node_settings;
mod server;
mod tls;

pub use http::{
    empty, error_chain, json, query_pairs, query_param, read_body, response, ApiError,
    PROMETHEUS_TEXT,
};
pub use server::{serve, ConnectionCounts, ConnectionStats, ServerOptions};
pub use tls::{server_config, TlsError};
