//! `raft-kv`: an HTTP key-value store replicated with Raft. One Datacake node per process,
//! `datacake-raft` with its durable log, and the HTTP front of `server-common`. See the
//! README for the API, the configuration and a three-node walkthrough.
//!
//! Exit status: 0 after a graceful shutdown (SIGTERM or SIGINT), 1 if the server cannot start
//! or fails, 2 for an invalid configuration (bad flag, file, key or value).

mod config;
mod http;
mod keys;
mod machine;
mod metrics;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
use datacake_raft::{RaftConfig, RaftExtension, Storage};
use server_common::{shutdown_signal, ConnectionStats, ServerOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Config};
use crate::http::App;
use crate::machine::KvMachine;

/// The exit status of an invalid configuration (as clap's for a bad flag).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let check_only = cli.check_config;
    let config = match Config::load(cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("raft-kv: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("plain structs serialise")
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("raft-kv: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = metrics::install().context("cannot install the metrics recorder")?;
    tokio::spawn(metrics::upkeep(prometheus.clone()));

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;

    let node = DatacakeNodeBuilder::new(
        config.node_id,
        ConnectionConfig::new(
            config.cluster_addr,
            config.public_addr,
            config.seeds.clone(),
        ),
    )
    .with_cluster_id(config.cluster_id.clone())
    .connect()
    .await
    .context("cannot join the cluster")?;
    let (election_min, election_max) = config.timings.election_timeout();
    let raft_config = RaftConfig::new(config.bootstrap_expect)
        .with_election_timeout(election_min, election_max)
        .with_heartbeat_interval(config.timings.heartbeat_interval())
        .with_request_timeout(config.timings.request_timeout())
        .with_forward_to_leader(true)
        .with_storage(Storage::Durable(config.data_dir.clone()));
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
        node_id = config.node_id,
        cluster_addr = %node.me().public_addr,
        http_addr = %listener.local_addr()?,
        data = %config.data_dir.display(),
        bootstrap_expect = config.bootstrap_expect,
        seeds = ?config.seeds,
        "raft-kv ready"
    );

    let connections = Arc::new(ConnectionStats::default());
    let app = Arc::new(App::new(
        raft,
        node.handle(),
        config.limits.clone(),
        prometheus,
        connections.clone(),
    ));
    let options = ServerOptions {
        tls: None,
        header_read_timeout: Duration::from_millis(config.limits.header_read_timeout_ms),
        max_connections: config.limits.max_connections,
    };
    server_common::serve(
        listener,
        move |request| app.clone().serve(request),
        connections,
        options,
        shutdown_signal(),
    )
    .await;

    tracing::info!("leaving the cluster");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
