//! Integration tests of `datacake-node`: whole nodes in one process, gossiping over loopback.

mod clock;
mod config;
mod discovery;
mod extension;
mod fixtures;
mod membership;
mod metrics;
#[cfg(feature = "certs")]
mod tls;
