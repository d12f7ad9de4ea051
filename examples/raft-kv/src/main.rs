//! `raft-kv`: an HTTP key-value store replicated with Raft. One Datacake node per process,
//! `datacake-raft` with its durable log, and the HTTP front, settings and lifecycle of
//! `server-common`. See the README for the API, the configuration and a three-node
//! walkthrough.
//!
//! Exit status: 0 after a graceful shutdown (SIGTERM or SIGINT) or `--print-config`, 1 if
//! the server cannot start or its shutdown outlasts `shutdown_timeout_ms`, 2 for an invalid
//! configuration (bad flag, variable, file, key or value), 130 or 143 for a second SIGINT or
//! SIGTERM during the shutdown.
#![forbid(unsafe_code)]

mod config;
mod http;
mod keys;
mod machine;
mod metrics;

use std::process::ExitCode;

use anyhow::Context;
use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
use datacake_raft::{LogStorage, RaftConfig, RaftExtension};
use metrics_exporter_prometheus::PrometheusHandle;
use server_common::lifecycle::{self, Outcome, ServerContext, Started};
use server_common::metrics::HttpMetrics;
use server_common::node_settings::millis;
use server_common::ServerOptions;
use tokio::net::TcpListener;

use crate::config::{Cli, Config};
use crate::http::App;
use crate::machine::KvMachine;

fn main() -> ExitCode {
    let cli = server_common::config::parse::<Cli, Config>();
    lifecycle::main("raft-kv", &cli.config, &cli, run)
}

async fn run(config: Config) -> Outcome {
    let (prometheus, listener) = match prepare(&config).await {
        Ok(prepared) => prepared,
        Err(error) => return Outcome::StartFailed(error),
    };
    let options = ServerOptions {
        tls: None,
        header_read_timeout: millis(config.limits.header_read_timeout_ms),
        stall_timeout: millis(config.limits.stall_timeout_ms),
        max_connections: config.limits.max_connections,
    };
    let metrics = HttpMetrics::new(metrics::PREFIX);
    let timeout = millis(config.shutdown_timeout_ms);
    lifecycle::run(listener, options, metrics, timeout, |context| {
        start(config, prometheus, context)
    })
    .await
}

/// What comes before serving: the metrics recorder, the data directory, the HTTP port.
async fn prepare(config: &Config) -> anyhow::Result<(PrometheusHandle, TcpListener)> {
    let prometheus = metrics::install().context("cannot install the metrics recorder")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    Ok((prometheus, listener))
}

/// Joins the cluster and starts Raft (while `/health` says `starting`).
async fn start(
    config: Config,
    prometheus: PrometheusHandle,
    context: ServerContext,
) -> anyhow::Result<Started<impl std::future::Future<Output = ()>>> {
    let builder = DatacakeNodeBuilder::new(
        config.node_id(),
        ConnectionConfig::new(
            config.cluster_addr,
            config.public_addr(),
            config.seeds.clone(),
        ),
    )
    .with_cluster_id(config.cluster_id.clone());
    let node = server_common::node_settings::with_discovery(
        builder,
        &config.discover_dns,
        config.discover_file.as_deref(),
    )
    .connect()
    .await
    .context("cannot join the cluster")?;
    let (election_min, election_max) = config.timings.election_timeout();
    let raft_config = RaftConfig::new(config.bootstrap_expect())
        .with_election_timeout(election_min, election_max)
        .with_heartbeat_interval(config.timings.heartbeat_interval())
        .with_request_timeout(config.timings.request_timeout())
        .with_forward_to_leader(true)
        .with_storage(LogStorage::Durable(config.data_dir.clone()));
    let raft = match node
        .add_extension(RaftExtension::new(KvMachine::default(), raft_config))
        .await
    {
        Ok(raft) => raft,
        Err(error) => {
            node.shutdown().await;
            return Err(error).context("cannot start raft");
        }
    };
    tracing::info!(
        node_id = config.node_id(),
        cluster_addr = %node.me().public_addr,
        http_addr = %config.http_addr,
        data = %config.data_dir.display(),
        bootstrap_expect = config.bootstrap_expect(),
        seeds = ?config.seeds,
        "raft-kv ready"
    );
    let app = App::new(
        raft,
        node.handle(),
        config.limits.clone(),
        prometheus,
        context,
    );
    Ok(Started {
        router: http::router(app),
        route_name: http::route_name,
        // Raft stops with the node (datacake-raft stops it on the node's shutdown signal);
        // every acknowledged write was already fsynced in its log.
        stop: node.shutdown(),
    })
}
