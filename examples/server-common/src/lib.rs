//! The HTTP(S) front of the example servers (`replicated-kv`, `raft-kv`), written once.
//!
//! - [`serve`]: the accept loop around a request handler, HTTP/1.1 (HTTPS with a rustls
//!   [`server_config`]), with a connection limit, a header-read timeout (also for idle
//!   keep-alive connections and TLS handshakes), a backoff when `accept` fails (e.g. out of
//!   file descriptors), and a graceful drain on shutdown; [`ConnectionStats`] counts what it
//!   did, for the application's `/metrics`.
//! - [`ApiError`] and [`json`]: JSON answers and `{"error": code, "message": ...}` errors;
//!   [`read_body`] reads a body within a byte limit (413 past it); [`query_param`].
//! - [`shutdown_signal`]: SIGTERM or SIGINT.

mod http;
mod server;
mod signal;
mod tls;

pub use http::{
    empty, error_chain, json, query_pairs, query_param, read_body, response, ApiError,
    PROMETHEUS_TEXT,
};
pub use server::{serve, ConnectionCounts, ConnectionStats, ServerOptions};
pub use signal::shutdown_signal;
pub use tls::{server_config, TlsError};
